package seccomp

import (
	"testing"
	"unsafe"
)

func TestStructSizes(t *testing.T) {
	if s := unsafe.Sizeof(Notif{}); s != 80 {
		t.Errorf("Notif is %d bytes, want 80", s)
	}
	if s := unsafe.Sizeof(Resp{}); s != 24 {
		t.Errorf("Resp is %d bytes, want 24", s)
	}
	if s := unsafe.Sizeof(addFD{}); s != 24 {
		t.Errorf("addFD is %d bytes, want 24", s)
	}
	if err := CheckSizes(); err != nil {
		t.Fatal(err)
	}
}

func TestParseRelease(t *testing.T) {
	for _, c := range []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"6.18.44-fc-v669", 6, 18, true},
		{"5.19.0", 5, 19, true},
		{"5.4.0-150-generic", 5, 4, true},
		{"6.1", 6, 1, true},
		{"6.10rc1", 6, 10, true},
		{"garbage", 0, 0, false},
	} {
		ma, mi, ok := parseRelease(c.in)
		if ok != c.ok || (ok && (ma != c.major || mi != c.minor)) {
			t.Errorf("parseRelease(%q) = %d,%d,%v", c.in, ma, mi, ok)
		}
	}
	if err := CheckKernel(); err != nil {
		t.Fatal(err)
	}
}
