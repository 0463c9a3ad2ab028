package supervisor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseRecvHdr(t *testing.T) {
	for _, ps := range []int{8, 4} {
		mem := fakeMem{base: 0x1000, b: make([]byte, 0x200)}
		put := func(off int, v uint64) {
			if ps == 4 {
				binary.LittleEndian.PutUint32(mem.b[off:], uint32(v))
			} else {
				binary.LittleEndian.PutUint64(mem.b[off:], v)
			}
		}
		p := ps
		put(0, 0x1100)        // msg_name
		put(p, 200)           // msg_namelen: clamped to 128
		put(2*p, 0x1040)      // msg_iov
		put(3*p, 2)           // msg_iovlen
		put(4*p, 0x1180)      // msg_control
		put(5*p, 64)          // msg_controllen
		put(0x40, 0x1190)     // iov[0]
		put(0x40+p, 5)        //
		put(0x40+2*p, 0x11a0) // iov[1]
		put(0x40+3*p, 7)      //
		h, err := parseRecvHdr(mem.read, ps, 0x1000)
		if err != nil {
			t.Fatalf("ps %d: %v", ps, err)
		}
		if h.name != 0x1100 || h.namelen != 128 || h.control != 0x1180 || h.controllen != 64 || h.total != 12 ||
			len(h.iov) != 2 || h.iov[1] != [2]uint64{0x11a0, 7} {
			t.Errorf("ps %d: %+v", ps, h)
		}
		segs := appendData(nil, h.iov, []byte("abcdefgh"))
		if len(segs) != 2 || segs[0].Addr != 0x1190 || string(segs[0].B) != "abcde" || segs[1].Addr != 0x11a0 || string(segs[1].B) != "fgh" {
			t.Errorf("ps %d: data spread as %+v", ps, segs)
		}

		put(3*p, 1025)
		if _, err := parseRecvHdr(mem.read, ps, 0x1000); err != unix.EMSGSIZE {
			t.Errorf("ps %d: 1025 iovecs: %v, want EMSGSIZE", ps, err)
		}
		put(3*p, 2)
		binary.LittleEndian.PutUint32(mem.b[p:], 0xffffffff) // namelen -1
		if _, err := parseRecvHdr(mem.read, ps, 0x1000); err != unix.EINVAL {
			t.Errorf("ps %d: negative namelen: %v, want EINVAL", ps, err)
		}
		put(0, 0) // no name: the length does not matter
		if h, err := parseRecvHdr(mem.read, ps, 0x1000); err != nil || h.namelen != 0 {
			t.Errorf("ps %d: no name: %+v %v", ps, h, err)
		}
		put(2*p, 0x5000) // iovecs unmapped
		if _, err := parseRecvHdr(mem.read, ps, 0x1000); err != unix.EFAULT {
			t.Errorf("ps %d: bad iov: %v", ps, err)
		}
		if _, err := parseRecvHdr(mem.read, ps, 0x11f0); err != unix.EFAULT {
			t.Errorf("ps %d: msghdr past the end: %v", ps, err)
		}
	}
}

// nativeCmsg encodes one control message as the kernel gives it to the supervisor.
func nativeCmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, 16, cmsgAlign(16+len(data), 8))
	binary.LittleEndian.PutUint64(b, uint64(16+len(data)))
	binary.LittleEndian.PutUint32(b[8:], uint32(level))
	binary.LittleEndian.PutUint32(b[12:], uint32(typ))
	b = append(b, data...)
	return append(b, make([]byte, cap(b)-len(b))...)
}

func ints(v ...int) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return b
}

func TestBuildControl(t *testing.T) {
	cred := bytes.Repeat([]byte{1}, 12)
	raw := append(nativeCmsg(unix.SOL_SOCKET, unix.SCM_CREDENTIALS, cred), nativeCmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(10, 11, 12))...)
	msgs, err := parseCmsgs(raw, 8)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("parse: %v %v", msgs, err)
	}
	// The kernel's own layout comes back unchanged when everything fits (numbers renumbered).
	next := 100
	install := func(fd int) (int, error) { next++; return next - 1, nil }
	out, used, ctrunc, passed, err := buildControl(msgs, 1024, 8, install)
	want := append(nativeCmsg(unix.SOL_SOCKET, unix.SCM_CREDENTIALS, cred), nativeCmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(100, 101, 102))...)
	if err != nil || ctrunc || used != uint64(len(want)) || !bytes.Equal(out, want[:len(out)]) || len(passed) != 3 {
		t.Errorf("fits: out %x used %d ctrunc %v passed %v err %v\nwant %x", out, used, ctrunc, passed, err, want)
	}

	cases := []struct {
		ps       int
		room     uint64
		fds      int // descriptors passed on
		used     uint64
		ctrunc   bool
		nmsgs    int
		lastData int
	}{
		{8, 0, 0, 0, true, 0, 0},
		{8, 15, 0, 0, true, 0, 0},                // not even a header: nothing
		{8, 16, 0, 16, true, 1, 0},               // credentials header only, cut
		{8, 32, 0, 32, true, 1, 12},              // credentials; no room for descriptors
		{8, 32 + 16 + 4, 1, 32 + 20, true, 2, 4}, // one descriptor of three
		{8, 32 + 24, 2, 32 + 24, true, 2, 8},
		{8, 32 + 32, 3, 32 + 32, false, 2, 12},
		{4, 24 + 12 + 12, 3, 48, false, 2, 12}, // i386: 12-byte headers, 4-byte alignment
		{4, 24 + 12 + 4, 1, 40, true, 2, 4},
	}
	for _, c := range cases {
		out, used, ctrunc, passed, err := buildControl(msgs, c.room, c.ps, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, perr := parseCmsgs(out, c.ps)
		if len(passed) != c.fds || used != c.used || ctrunc != c.ctrunc || perr != nil || len(got) != c.nmsgs ||
			(c.nmsgs > 0 && len(got[len(got)-1].data) != c.lastData) || used > c.room {
			t.Errorf("ps %d room %d: passed %v used %d ctrunc %v msgs %v (%v)", c.ps, c.room, passed, used, ctrunc, got, perr)
		}
	}

	// A full descriptor table stops installing there, truncating.
	n := 0
	_, _, ctrunc, passed, err = buildControl(msgs, 1024, 8, func(fd int) (int, error) {
		if n++; n > 1 {
			return -1, errInstallStop
		}
		return 50, nil
	})
	if err != nil || !ctrunc || len(passed) != 1 {
		t.Errorf("EMFILE: ctrunc %v passed %v err %v", ctrunc, passed, err)
	}
	// Any other install error aborts.
	boom := errors.New("boom")
	if _, _, _, _, err := buildControl(msgs, 1024, 8, func(int) (int, error) { return -1, boom }); err != boom {
		t.Errorf("install error: %v", err)
	}
}

func TestCompatTimestamp(t *testing.T) {
	tv := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, 1700000000), 123456)
	raw := nativeCmsg(unix.SOL_SOCKET, soTimestampOld, tv)
	msgs, _ := parseCmsgs(raw, 8)
	out, used, ctrunc, _, _ := buildControl(msgs, 64, 4, nil)
	got, err := parseCmsgs(out, 4)
	if err != nil || ctrunc || used != 20 || len(got) != 1 || len(got[0].data) != 8 ||
		binary.LittleEndian.Uint32(got[0].data) != 1700000000 || binary.LittleEndian.Uint32(got[0].data[4:]) != 123456 {
		t.Errorf("compat timeval: %x used %d", out, used)
	}
}

func TestParseCmsgsMalformed(t *testing.T) {
	good := nativeCmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(3))
	for name, b := range map[string][]byte{
		"length past the end": func() []byte { b := append([]byte(nil), good...); b[0] = 200; return b }(),
		"length under header": func() []byte { b := append([]byte(nil), good...); b[0] = 8; return b }(),
		"odd descriptors":     nativeCmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, []byte{1, 2, 3}),
	} {
		if _, err := parseCmsgs(b, 8); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if m, err := parseCmsgs(append(good, 1, 2, 3), 8); err != nil || len(m) != 1 {
		t.Errorf("trailing bytes shorter than a header: %v %v", m, err)
	}
}

// FuzzCmsgs: whatever the control buffer, parsing never panics, every message lies inside the
// buffer, and laying the messages out again for any room and ABI stays within the room, parses
// back, and passes on no more descriptors than it was given.
func FuzzCmsgs(f *testing.F) {
	f.Add(nativeCmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(3, 4)), uint64(40), true)
	f.Add(append(nativeCmsg(unix.SOL_SOCKET, unix.SCM_CREDENTIALS, make([]byte, 12)), nativeCmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(5))...), uint64(20), false)
	f.Add(nativeCmsg(unix.SOL_SOCKET, soTimestampingOld, make([]byte, 48)), uint64(100), false)
	f.Add(nativeCmsg(unix.SOL_SOCKET, scmPidfd, ints(7)), uint64(16), true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}, uint64(1<<40), true)
	f.Fuzz(func(t *testing.T, b []byte, room uint64, compat bool) {
		msgs, _ := parseCmsgs(b, 8)
		total := 0
		for _, m := range msgs {
			if len(m.data) > len(b) {
				t.Fatalf("message data longer than the buffer")
			}
			if m.carriesFds() {
				total += len(m.data) / 4
			}
		}
		ps := 8
		if compat {
			ps = 4
		}
		room %= 1 << 16
		out, used, _, passed, err := buildControl(msgs, room, ps, func(fd int) (int, error) { return fd, nil })
		if err != nil {
			t.Fatal(err)
		}
		if used > room || uint64(len(out)) > room || uint64(len(out)) > used {
			t.Fatalf("room %d: wrote %d, used %d", room, len(out), used)
		}
		if len(passed) > total {
			t.Fatalf("passed %d descriptors of %d", len(passed), total)
		}
		if _, err := parseCmsgs(out, ps); err != nil && !errors.Is(err, errCmsgOddFdsCount) {
			// A cut SCM_RIGHTS is never written (only whole descriptors); other cut messages
			// keep a consistent length.
			t.Fatalf("laid-out control does not parse: %v (%x)", err, out)
		}
	})
}
