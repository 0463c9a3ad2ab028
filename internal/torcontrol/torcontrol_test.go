package torcontrol

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gotorsocks/torsocks/internal/torcontrol/torcontroltest"
)

// replies are the fake ControlPort's answers to the commands of the tests.
var replies = map[string]string{
	"GETINFO version":        "250-version=0.4.8.9\r\n250 OK\r\n",
	"GETINFO circuit-status": "250+circuit-status=\r\n1 BUILT $A~a\r\n..dotted\r\n.\r\n250 OK\r\n",
	"GETINFO stream-status":  "250+stream-status=\r\n.\r\n250 OK\r\n",
	"GETINFO late":           "650 STREAM 1 NEW 0 x:80\r\n650-HS_DESC RECEIVED\r\n650 OK\r\n250-late=yes\r\n250 OK\r\n",
	"GETINFO nothing":        "250 OK\r\n",
	"GETINFO bad":            "552 Unrecognized key \"bad\"\r\n",
	"GETCONF SocksPort":      "250-SocksPort=9050\r\n250 SocksPort=unix:/s ExtendedErrors\r\n",
	"SETEVENTS HS_DESC":      "250 OK\r\n650 HS_DESC REQUESTED x\r\n650 HS_DESC RECEIVED x\r\n",
}

// serve starts a fake ControlPort on network ("tcp" or "unix") and returns its address and its
// cookie file.
func serve(t *testing.T, network string) (addr, cookieFile string) {
	t.Helper()
	dir := t.TempDir()
	addr = "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(dir, "control")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cookie := []byte("0123456789abcdef0123456789abcdef")
	cookieFile = filepath.Join(dir, "cookie")
	if err := os.WriteFile(cookieFile, cookie, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &torcontroltest.Server{Cookie: cookie, Handle: func(cmd string) (string, bool) {
		if cmd == "SIGNAL HALT" {
			return "", true
		}
		r, ok := replies[cmd]
		if !ok {
			return "510 Unrecognized command\r\n", false
		}
		return r, false
	}}
	go s.Serve(l)
	return l.Addr().String(), cookieFile
}

func dial(t *testing.T, network string) *Conn {
	t.Helper()
	addr, cookie := serve(t, network)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cc, err := Dial(ctx, network, addr, cookie)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestGetInfo(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		cc := dial(t, network)
		for key, want := range map[string]string{
			"version":        "0.4.8.9",
			"circuit-status": "1 BUILT $A~a\n.dotted",
			"stream-status":  "",
			"late":           "yes", // after events, which Do skips
		} {
			if got, err := cc.GetInfo(key); err != nil || got != want {
				t.Errorf("%s: GetInfo(%q) = %q, %v; want %q", network, key, got, err, want)
			}
		}
		if got, err := cc.GetInfo("nothing"); err == nil || !strings.Contains(err.Error(), "no value") {
			t.Errorf("%s: GetInfo(nothing) = %q, %v; want no value", network, got, err)
		}
	}
}

func TestDo(t *testing.T) {
	cc := dial(t, "unix")
	r, err := cc.Do("GETCONF SocksPort")
	if want := (Reply{250, []string{"SocksPort=9050", "SocksPort=unix:/s ExtendedErrors"}}); err != nil || !reflect.DeepEqual(r, want) {
		t.Errorf("GETCONF = %+v, %v; want %+v", r, err, want)
	}
	r, err = cc.Do("GETINFO bad")
	if err == nil || r.Code != 552 || err.Error() != `tor control GETINFO: 552 Unrecognized key "bad"` {
		t.Errorf("GETINFO bad = %+v, %v", r, err)
	}
	if _, err := cc.Do("GETINFO version\r\nSIGNAL HALT"); err == nil || !strings.Contains(err.Error(), "line break") {
		t.Errorf("a command with a line break: %v", err)
	}
	if r, err := cc.Do("SIGNAL HALT"); err == nil || !errors.Is(err, io.EOF) || err.Error() != "tor control SIGNAL: EOF" || !reflect.DeepEqual(r, Reply{}) {
		t.Errorf("a command the ControlPort hangs up on: %v", err)
	}
}

func TestEvents(t *testing.T) {
	cc := dial(t, "tcp")
	if err := cc.Send("SETEVENTS HS_DESC"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := 0; i < 3; i++ {
		r, err := cc.Read()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.String())
	}
	if want := []string{"250 OK", "650 HS_DESC REQUESTED x", "650 HS_DESC RECEIVED x"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	cc.Close()
	if _, err := cc.Read(); err == nil {
		t.Error("Read after Close: no error")
	}
}

func TestDialFailures(t *testing.T) {
	addr, cookie := serve(t, "unix")
	ctx := context.Background()
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not the cookie"), 0o600)
	for _, tc := range []struct {
		addr, cookie, want string
	}{
		{addr + ".none", cookie, "tor control port: dial unix"},
		{addr, cookie + ".none", "tor control cookie: open "},
		{addr, wrong, "tor control AUTHENTICATE: 515 Authentication failed"},
	} {
		if cc, err := Dial(ctx, "unix", tc.addr, tc.cookie); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Dial(%s, %s) = %v, %v; want %q", tc.addr, tc.cookie, cc, err, tc.want)
		}
	}
}

// TestDialSilent: the context bounds the authentication with a ControlPort that never answers.
func TestDialSilent(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, "tcp", l.Addr().String(), "/nonexistent"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	if _, err := Dial(ctx, "tcp", l.Addr().String(), "/nonexistent"); !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Errorf("cancelled: %v after %v", err, time.Since(start))
	}
}

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Reply
		err  bool
	}{
		{"250 OK\r\n", Reply{250, []string{"OK"}}, false},
		{"250 OK\n", Reply{250, []string{"OK"}}, false},
		{"250-a=1\r\n250-b=\"x y\"\r\n250 OK\r\n", Reply{250, []string{"a=1", `b="x y"`, "OK"}}, false},
		{"250+d=\r\nl1\r\n.l2\r\n\r\n.\r\n250 OK\r\n", Reply{250, []string{"d=\nl1\nl2\n", "OK"}}, false},
		{"650 BW 1 2\r\n", Reply{650, []string{"BW 1 2"}}, false},
		{"250 \r\n", Reply{250, []string{""}}, false},
		{"250\r\n", Reply{}, true},
		{"25x OK\r\n", Reply{}, true},
		{"-12 OK\r\n", Reply{}, true},
		{"250/OK\r\n", Reply{}, true},
		{"250-a\r\n", Reply{}, true},        // cut short
		{"250+d=\r\nl1\r\n", Reply{}, true}, // in a data block
		{"250 OK", Reply{}, true},           // no line end
	} {
		got, err := readReply(bufio.NewReader(strings.NewReader(tc.in)))
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("readReply(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestFields(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a  b ", []string{"a", "b"}},
		{`NOTICE BOOTSTRAP PROGRESS=45 SUMMARY="Loading relay descriptors"`, []string{"NOTICE", "BOOTSTRAP", "PROGRESS=45", `SUMMARY="Loading relay descriptors"`}},
		{`U="a \"b c\" d" P="\\" X`, []string{`U="a \"b c\" d"`, `P="\\"`, "X"}},
		{`a="x"y"z w" b`, []string{`a="x"y"z w"`, "b"}},
	} {
		if got, err := Fields(tc.in); err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Fields(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{`a="b`, `a="b\"`, `"`} {
		if got, err := Fields(bad); err == nil {
			t.Errorf("Fields(%q) = %q: no error", bad, got)
		}
	}
}

func TestKeyValues(t *testing.T) {
	got := KeyValues([]string{"NOTICE", "PROGRESS=4", `SUMMARY="a \"b\""`, "E=", "=x", "TAG=a", "TAG=b=c"})
	want := map[string]string{"PROGRESS": "4", "SUMMARY": `a "b"`, "E": "", "": "x", "TAG": "b=c"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("KeyValues = %q, want %q", got, want)
	}
}

func TestUnquote(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:             "plain",
		`"`:                 `"`,
		`""`:                "",
		`"al ice"`:          "al ice",
		`"p\"w\\"`:          `p"w\`,
		`"a\nb\r\tc"`:       "a\nb\r\tc",
		`"\101\0\3777"`:     "A\x00\xff7",
		`"\q"`:              "q",
		`"x\"`:              `x\`,
		`half"`:             `half"`,
		"\"\xff\xfe \x01\"": "\xff\xfe \x01",
	} {
		if got := Unquote(in); got != want {
			t.Errorf("Unquote(%q) = %q, want %q", in, got, want)
		}
	}
}

// encodeReply writes r as a ControlPort would.
func encodeReply(r Reply) string {
	var b strings.Builder
	for i, l := range r.Lines {
		code := string(rune('0'+r.Code/100)) + string(rune('0'+r.Code/10%10)) + string(rune('0'+r.Code%10))
		text, data, isData := strings.Cut(l, "\n")
		switch {
		case isData:
			b.WriteString(code + "+" + text + "\r\n")
			for _, dl := range strings.Split(data, "\n") {
				if strings.HasPrefix(dl, ".") {
					dl = "." + dl
				}
				b.WriteString(dl + "\r\n")
			}
			b.WriteString(".\r\n")
		case i == len(r.Lines)-1:
			b.WriteString(code + " " + text + "\r\n")
		default:
			b.WriteString(code + "-" + text + "\r\n")
		}
	}
	return b.String()
}

// FuzzReadReply: a reply read is one a ControlPort could have written, and reads back the same.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"250 OK\r\n",
		"250-version=0.4.8.9\r\n250 OK\r\n",
		"250+circuit-status=\r\n1 BUILT $A~a\r\n..dotted\r\n\r\n.\r\n250 OK\r\n",
		"650 STREAM 1 NEW 0 x:80\r\n250 OK\r\n",
		"552 Unrecognized key \"bad\"\r\n",
		"250-a\n250+b\n.\n250 c\n",
		"250\r\n",
		"2a0 OK\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, err := readReply(bufio.NewReader(strings.NewReader(in)))
		if err != nil {
			return
		}
		if r.Code < 0 || r.Code > 999 || len(r.Lines) == 0 || strings.Contains(r.Lines[len(r.Lines)-1], "\n") {
			t.Fatalf("readReply(%q) = %+v", in, r)
		}
		out := encodeReply(r)
		again, err := readReply(bufio.NewReader(strings.NewReader(out)))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("readReply(%q) = %+v; written again %q, read %+v, %v", in, r, out, again, err)
		}
	})
}

// quote writes s as a QuotedString, escaped as tor escapes it.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteString(`\` + string(c))
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20 || c >= 0x7f:
			b.WriteString(`\` + string(rune('0'+c>>6)) + string(rune('0'+c>>3&7)) + string(rune('0'+c&7)))
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// FuzzFields: fields joined again split the same, and a value quoted as tor quotes it is one
// field that unquotes to the value.
func FuzzFields(f *testing.F) {
	for _, s := range []string{
		`NOTICE BOOTSTRAP PROGRESS=45 TAG=loading_descriptors SUMMARY="Loading relay descriptors"`,
		`12 BUILT $AAAA~exit0,$BBBB~auth1 BUILD_FLAGS=NEED_CAPACITY SOCKS_USERNAME="al ice" SOCKS_PASSWORD="p\"w"`,
		`a="b`, `"\\" "\"`, "  ", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		fields, err := Fields(line)
		if err == nil {
			for _, fl := range fields {
				if fl == "" {
					t.Fatalf("Fields(%q) = %q: an empty field", line, fields)
				}
			}
			KeyValues(fields)
			again, err := Fields(strings.Join(fields, " "))
			if err != nil || !reflect.DeepEqual(again, fields) {
				t.Fatalf("Fields(%q) = %q; joined and split again: %q, %v", line, fields, again, err)
			}
		}
		q := quote(line)
		if fields, err := Fields("K=" + q + " X"); err != nil || len(fields) != 2 || fields[0] != "K="+q {
			t.Fatalf("Fields(K=%s X) = %q, %v", q, fields, err)
		}
		if got := Unquote(q); got != line {
			t.Fatalf("Unquote(%s) = %q, want %q", q, got, line)
		}
	})
}
