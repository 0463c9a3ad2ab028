package socks5

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
)

// unhex turns "05 01 00" into bytes.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestAppendGreeting(t *testing.T) {
	if got := AppendGreeting(nil, false); !bytes.Equal(got, []byte{5, 1, 0}) {
		t.Errorf("no auth: % x", got)
	}
	if got := AppendGreeting([]byte{9}, true); !bytes.Equal(got, []byte{9, 5, 1, 2}) {
		t.Errorf("auth, appended: % x", got)
	}
}

func TestAppendAuth(t *testing.T) {
	long := strings.Repeat("u", 255)
	tests := []struct {
		a       Auth
		want    string
		wantErr bool
	}{
		{Auth{"user", "pass"}, "01 04 75736572 04 70617373", false},
		{Auth{"torsocks-42:1700000000", "0"}, "01 16 746f72736f636b732d34323a31373030303030303030 01 30", false},
		{Auth{long, "p"}, "01 ff " + hex.EncodeToString([]byte(long)) + " 01 70", false},
		{Auth{"", "p"}, "", true},
		{Auth{"u", ""}, "", true},
		{Auth{long + "u", "p"}, "", true},
		{Auth{"u", long + "p"}, "", true},
	}
	for _, tt := range tests {
		got, err := AppendAuth(nil, tt.a)
		if tt.wantErr {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("AppendAuth(%d/%d bytes): err %v, want ErrInvalidRequest", len(tt.a.Username), len(tt.a.Password), err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, unhex(t, tt.want)) {
			t.Errorf("AppendAuth(%q) = % x, %v; want %s", tt.a.Username, got, err, tt.want)
		}
	}
}

func TestAppendRequest(t *testing.T) {
	name255 := strings.Repeat("a", 255)
	tests := []struct {
		name string
		r    Request
		want string // hex; "" = error expected
	}{
		{"connect name", Request{CmdConnect, "example.com", 80}, "05 01 00 03 0b 6578616d706c652e636f6d 0050"},
		{"connect ipv4 as text", Request{CmdConnect, "203.0.113.10", 443}, "05 01 00 03 0c 3230332e302e3131332e3130 01bb"},
		{"connect ipv6 as text", Request{CmdConnect, "2001:db8::10", 22}, "05 01 00 03 0c 323030313a6462383a3a3130 0016"},
		{"connect onion", Request{CmdConnect, "abc.onion", 65535}, "05 01 00 03 09 6162632e6f6e696f6e ffff"},
		{"connect port 0", Request{CmdConnect, "h", 0}, "05 01 00 03 01 68 0000"},
		{"connect 255", Request{CmdConnect, name255, 1}, "05 01 00 03 ff " + hex.EncodeToString([]byte(name255)) + " 0001"},
		{"connect 256", Request{CmdConnect, name255 + "a", 1}, ""},
		{"connect empty", Request{CmdConnect, "", 1}, ""},
		{"connect NUL", Request{CmdConnect, "a\x00b", 1}, ""},
		{"resolve", Request{CmdResolve, "example.com", 0}, "05 f0 00 03 0b 6578616d706c652e636f6d 002a"},
		{"resolve port set", Request{CmdResolve, "x", 80}, "05 f0 00 03 01 78 0050"},
		{"resolve empty", Request{CmdResolve, "", 0}, ""},
		{"ptr ipv4", Request{CmdResolvePTR, "192.0.2.1", 0}, "05 f1 00 01 c0000201 002a"},
		{"ptr ipv4 mapped", Request{CmdResolvePTR, "::ffff:192.0.2.1", 0}, "05 f1 00 01 c0000201 002a"},
		{"ptr ipv6", Request{CmdResolvePTR, "2001:db8::10", 0}, "05 f1 00 04 20010db8000000000000000000000010 002a"},
		{"ptr port set", Request{CmdResolvePTR, "10.0.0.1", 7}, "05 f1 00 01 0a000001 0007"},
		{"ptr name", Request{CmdResolvePTR, "example.com", 0}, ""},
		{"unknown cmd", Request{0x02, "example.com", 1}, ""},
	}
	for _, tt := range tests {
		got, err := AppendRequest([]byte{}, tt.r)
		if tt.want == "" {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%s: err %v, want ErrInvalidRequest", tt.name, err)
			}
			if len(got) != 0 {
				t.Errorf("%s: wrote % x on error", tt.name, got)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, unhex(t, tt.want)) {
			t.Errorf("%s: got % x, %v\nwant %s", tt.name, got, err, tt.want)
		}
	}
}

func TestConnectAddr(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.10:80":          "203.0.113.10",
		"[::ffff:203.0.113.10]:80": "203.0.113.10",
		"[2001:db8::10%eth0]:80":   "2001:db8::10",
	} {
		r := ConnectAddr(netip.MustParseAddrPort(in))
		if r.Cmd != CmdConnect || r.Host != want || r.Port != 80 {
			t.Errorf("ConnectAddr(%s) = %+v, want host %s", in, r, want)
		}
	}
}

func TestRequestString(t *testing.T) {
	for r, want := range map[Request]string{
		{CmdConnect, "example.com", 80}:  "CONNECT example.com:80",
		{CmdConnect, "2001:db8::10", 80}: "CONNECT [2001:db8::10]:80",
		{CmdResolve, "example.com", 42}:  "RESOLVE example.com:42",
		{CmdResolvePTR, "192.0.2.1", 42}: "RESOLVE_PTR 192.0.2.1:42",
		{0x7, "x", 1}:                    "0x7 x:1",
	} {
		if got := r.String(); got != want {
			t.Errorf("%+v.String() = %q, want %q", r, got, want)
		}
	}
}

func TestReadReplyLengths(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Reply
		n    int
	}{
		{"tor ipv4 (10 bytes)", "05 00 00 01 7f000001 2382", Reply{Addr: netip.MustParseAddr("127.0.0.1"), Port: 9090}, 10},
		{"tor ipv6 (22 bytes)", "05 00 00 04 00000000000000000000000000000001 0050", Reply{Addr: netip.MustParseAddr("::1"), Port: 80}, 22},
		{"ptr name", "05 00 00 03 0b 6578616d706c652e636f6d 002a", Reply{Name: "example.com", Port: 42}, 18},
		{"empty name", "05 00 00 03 00 0000", Reply{Port: 0}, 7},
		{"resolve answer", "05 00 00 01 cb00710a 0000", Reply{Addr: netip.MustParseAddr("203.0.113.10")}, 10},
	}
	for _, tt := range tests {
		msg := unhex(t, tt.in)
		if len(msg) != tt.n {
			t.Fatalf("%s: test message is %d bytes, want %d", tt.name, len(msg), tt.n)
		}
		trailer := []byte("SSH-2.0-OpenSSH_9.2\r\n")
		r := bytes.NewReader(append(msg, trailer...))
		got, err := ReadReply(r)
		if err != nil || got != tt.want {
			t.Errorf("%s: got %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
		rest, _ := io.ReadAll(r)
		if !bytes.Equal(rest, trailer) {
			t.Errorf("%s: over-read: left %q, want %q", tt.name, rest, trailer)
		}
	}
}

// oneByteReader hands out one byte per Read, like a slow socket, and counts reads.
type oneByteReader struct {
	b []byte
}

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

func TestReadReplySlowReaderNoOverRead(t *testing.T) {
	msg := unhex(t, "05 00 00 04 20010db8000000000000000000000010 1f90")
	r := &oneByteReader{b: append(msg, "220 smtp ready\r\n"...)}
	got, err := ReadReply(r)
	if err != nil || got.Addr != netip.MustParseAddr("2001:db8::10") || got.Port != 8080 {
		t.Fatalf("got %+v, %v", got, err)
	}
	if string(r.b) != "220 smtp ready\r\n" {
		t.Fatalf("over-read: left %q", r.b)
	}
}

func TestReadReplyCodes(t *testing.T) {
	want := map[byte]struct {
		errno syscall.Errno
		text  string
	}{
		0x01: {syscall.ECONNREFUSED, "general SOCKS server failure"},
		0x02: {syscall.ECONNREFUSED, "connection not allowed by ruleset"},
		0x03: {syscall.ENETUNREACH, "network unreachable"},
		0x04: {syscall.EHOSTUNREACH, "host unreachable"},
		0x05: {syscall.ECONNREFUSED, "connection refused"},
		0x06: {syscall.ETIMEDOUT, "TTL expired"},
		0x07: {syscall.ECONNREFUSED, "command not supported"},
		0x08: {syscall.ECONNREFUSED, "address type not supported"},
		0xF0: {syscall.ECONNABORTED, "onion service descriptor can not be found"},
		0xF1: {syscall.ECONNABORTED, "onion service descriptor is invalid"},
		0xF2: {syscall.ECONNABORTED, "onion service introduction failed"},
		0xF3: {syscall.ECONNABORTED, "onion service rendezvous failed"},
		0xF4: {syscall.ECONNABORTED, "onion service missing client authorization"},
		0xF5: {syscall.ECONNABORTED, "onion service wrong client authorization"},
		0xF6: {syscall.ECONNABORTED, "onion service invalid address"},
		0xF7: {syscall.ECONNABORTED, "onion service introduction timed out"},
		0x09: {syscall.ECONNABORTED, "unknown reply code"},
		0xFF: {syscall.ECONNABORTED, "unknown reply code"},
	}
	// Success first.
	if _, err := ReadReply(bytes.NewReader(unhex(t, "05 00 00 01 00000000 0000"))); err != nil {
		t.Fatalf("code 0: %v", err)
	}
	for code, w := range want {
		msg := append([]byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0}, "tail"...)
		r := bytes.NewReader(msg)
		rep, err := ReadReply(r)
		var re *ReplyError
		if !errors.As(err, &re) || re.Code != code {
			t.Errorf("code 0x%02x: err %v, want *ReplyError", code, err)
			continue
		}
		if rep.Code != code || rep.Addr != netip.IPv4Unspecified() {
			t.Errorf("code 0x%02x: reply %+v", code, rep)
		}
		if r.Len() != 4 {
			t.Errorf("code 0x%02x: %d bytes left, want 4", code, r.Len())
		}
		if got := re.Errno(); got != w.errno {
			t.Errorf("code 0x%02x: Errno %v, want %v", code, got, w.errno)
		}
		if got := Errno(fmt.Errorf("wrapped: %w", err)); got != w.errno {
			t.Errorf("code 0x%02x: Errno(wrapped) %v, want %v", code, got, w.errno)
		}
		if wantText := fmt.Sprintf("SOCKS5 reply 0x%02x: %s", code, w.text); err.Error() != wantText {
			t.Errorf("code 0x%02x: Error() %q, want %q", code, err.Error(), wantText)
		}
	}
}

func TestReadReplyMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", io.EOF},
		{"short header", "05 00", io.ErrUnexpectedEOF},
		{"bad version", "04 00 00 01 00000000 0000", ErrMalformed},
		{"socks4 style", "00 5a 0000 00000000", ErrMalformed},
		{"bad atyp", "05 00 00 02 00000000 0000", ErrMalformed},
		{"atyp 0", "05 00 00 00", ErrMalformed},
		{"short ipv4", "05 00 00 01 7f00", io.ErrUnexpectedEOF},
		{"no port", "05 00 00 01 7f000001", io.ErrUnexpectedEOF},
		{"short ipv6", "05 00 00 04 0000000000", io.ErrUnexpectedEOF},
		{"no name len", "05 00 00 03", io.ErrUnexpectedEOF},
		{"short name", "05 00 00 03 05 6162", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		_, err := ReadReply(bytes.NewReader(unhex(t, tt.in)))
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
	// An error code hides a malformed or missing address: the code is the news.
	for _, in := range []string{"05 05 00 09", "05 05 00 01", "05 04 00 01 0000"} {
		_, err := ReadReply(bytes.NewReader(unhex(t, in)))
		var re *ReplyError
		if !errors.As(err, &re) {
			t.Errorf("%s: err %v, want *ReplyError", in, err)
		}
	}
}

// conn is a scripted server: reads come from the server's bytes, writes are recorded
// one entry per Write call.
type conn struct {
	r      *bytes.Reader
	writes [][]byte
	werr   error
}

func (c *conn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *conn) Write(p []byte) (int, error) {
	if c.werr != nil {
		return 0, c.werr
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func TestHandshake(t *testing.T) {
	banner := "SSH-2.0-OpenSSH_9.2\r\n"
	tests := []struct {
		name   string
		req    Request
		auth   *Auth
		server string
		writes []string
		want   Reply
		err    error
		errno  syscall.Errno
	}{
		{
			name:   "connect no auth",
			req:    Request{CmdConnect, "203.0.113.10", 22},
			server: "05 00  05 00 00 01 7f000001 d431",
			writes: []string{"05 01 00", "05 01 00 03 0c 3230332e302e3131332e3130 0016"},
			want:   Reply{Addr: netip.MustParseAddr("127.0.0.1"), Port: 54321},
		},
		{
			name:   "connect with auth",
			req:    Request{CmdConnect, "example.com", 80},
			auth:   &Auth{"u", "p"},
			server: "05 02  01 00  05 00 00 04 00000000000000000000000000000001 0000",
			writes: []string{"05 01 02", "01 01 75 01 70", "05 01 00 03 0b 6578616d706c652e636f6d 0050"},
			want:   Reply{Addr: netip.IPv6Loopback()},
		},
		{
			name:   "auth status version 05 tolerated",
			req:    Request{CmdConnect, "h", 1},
			auth:   &Auth{"u", "p"},
			server: "05 02  05 00  05 00 00 01 00000000 0000",
			writes: []string{"05 01 02", "01 01 75 01 70", "05 01 00 03 01 68 0001"},
			want:   Reply{Addr: netip.IPv4Unspecified()},
		},
		{
			name:   "auth failed",
			req:    Request{CmdConnect, "h", 1},
			auth:   &Auth{"u", "bad"},
			server: "05 02  01 01",
			writes: []string{"05 01 02", "01 01 75 03 626164"},
			err:    ErrAuthFailed,
			errno:  syscall.EINVAL,
		},
		{
			name:   "resolve",
			req:    Request{CmdResolve, "example.com", 0},
			server: "05 00  05 00 00 01 cb00710a 0000",
			writes: []string{"05 01 00", "05 f0 00 03 0b 6578616d706c652e636f6d 002a"},
			want:   Reply{Addr: netip.MustParseAddr("203.0.113.10")},
		},
		{
			name:   "resolve fails",
			req:    Request{CmdResolve, "nx.example", 0},
			server: "05 00  05 04 00 01 00000000 0000",
			writes: []string{"05 01 00", "05 f0 00 03 0a 6e782e6578616d706c65 002a"},
			want:   Reply{Code: 4, Addr: netip.IPv4Unspecified()},
			err:    &ReplyError{4},
			errno:  syscall.EHOSTUNREACH,
		},
		{
			name:   "resolve ptr",
			req:    Request{CmdResolvePTR, "203.0.113.10", 0},
			server: "05 00  05 00 00 03 07 6578616d706c65 002a",
			writes: []string{"05 01 00", "05 f1 00 01 cb00710a 002a"},
			want:   Reply{Name: "example", Port: 42},
		},
		{
			name:   "no acceptable method",
			req:    Request{CmdConnect, "h", 1},
			server: "05 ff",
			writes: []string{"05 01 00"},
			err:    ErrNoAcceptableMethod,
			errno:  syscall.ECONNABORTED,
		},
		{
			name:   "method not offered",
			req:    Request{CmdConnect, "h", 1},
			server: "05 02",
			writes: []string{"05 01 00"},
			err:    ErrMalformed,
			errno:  syscall.ECONNABORTED,
		},
		{
			name:   "bad selection version",
			req:    Request{CmdConnect, "h", 1},
			server: "04 00",
			writes: []string{"05 01 00"},
			err:    ErrMalformed,
			errno:  syscall.ECONNABORTED,
		},
		{
			name:   "bad auth version",
			req:    Request{CmdConnect, "h", 1},
			auth:   &Auth{"u", "p"},
			server: "05 02  02 00",
			writes: []string{"05 01 02", "01 01 75 01 70"},
			err:    ErrMalformed,
			errno:  syscall.ECONNABORTED,
		},
		{
			name:   "eof at once",
			req:    Request{CmdConnect, "h", 1},
			server: "",
			writes: []string{"05 01 00"},
			err:    io.EOF,
			errno:  syscall.EIO,
		},
		{
			name:   "eof in reply",
			req:    Request{CmdConnect, "h", 1},
			server: "05 00  05 00 00 01 7f",
			writes: []string{"05 01 00", "05 01 00 03 01 68 0001"},
			err:    io.ErrUnexpectedEOF,
			errno:  syscall.EIO,
		},
		{
			name:  "invalid request sends nothing",
			req:   Request{CmdConnect, "", 1},
			err:   ErrInvalidRequest,
			errno: syscall.EINVAL,
		},
		{
			name:  "invalid auth sends nothing",
			req:   Request{CmdConnect, "h", 1},
			auth:  &Auth{"", ""},
			err:   ErrInvalidRequest,
			errno: syscall.EINVAL,
		},
	}
	for _, tt := range tests {
		server := unhex(t, tt.server)
		if tt.err == nil {
			server = append(server, banner...)
		}
		c := &conn{r: bytes.NewReader(server)}
		got, err := Handshake(c, tt.req, tt.auth)
		if tt.err == nil && err != nil {
			t.Errorf("%s: unexpected error %v", tt.name, err)
		}
		if tt.err != nil {
			var re *ReplyError
			if want, ok := tt.err.(*ReplyError); ok {
				if !errors.As(err, &re) || re.Code != want.Code {
					t.Errorf("%s: err %v, want %v", tt.name, err, tt.err)
				}
			} else if !errors.Is(err, tt.err) {
				t.Errorf("%s: err %v, want %v", tt.name, err, tt.err)
			}
			if e := Errno(err); e != tt.errno {
				t.Errorf("%s: Errno %v, want %v", tt.name, e, tt.errno)
			}
		}
		if got != tt.want {
			t.Errorf("%s: reply %+v, want %+v", tt.name, got, tt.want)
		}
		if len(c.writes) != len(tt.writes) {
			t.Errorf("%s: %d writes (% x), want %d", tt.name, len(c.writes), c.writes, len(tt.writes))
		} else {
			for i, w := range tt.writes {
				if !bytes.Equal(c.writes[i], unhex(t, w)) {
					t.Errorf("%s: write %d = % x, want %s", tt.name, i, c.writes[i], w)
				}
			}
		}
		if tt.err == nil {
			rest, _ := io.ReadAll(c.r)
			if string(rest) != banner {
				t.Errorf("%s: over-read, left %q", tt.name, rest)
			}
		}
	}
}

func TestHandshakeWriteError(t *testing.T) {
	c := &conn{r: bytes.NewReader(nil), werr: syscall.EPIPE}
	_, err := Handshake(c, Request{CmdConnect, "h", 1}, nil)
	if !errors.Is(err, syscall.EPIPE) || Errno(err) != syscall.EPIPE {
		t.Fatalf("err %v (errno %v), want EPIPE", err, Errno(err))
	}
}

type shortWriter struct{ conn }

func (w *shortWriter) Write(p []byte) (int, error) { return len(p) - 1, nil }

func TestHandshakeShortWrite(t *testing.T) {
	_, err := Handshake(&shortWriter{}, Request{CmdConnect, "h", 1}, nil)
	if !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("err %v, want io.ErrShortWrite", err)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

func TestErrno(t *testing.T) {
	tests := []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{&ReplyError{5}, syscall.ECONNREFUSED},
		{fmt.Errorf("x: %w", ErrAuthFailed), syscall.EINVAL},
		{fmt.Errorf("x: %w", ErrInvalidRequest), syscall.EINVAL},
		{fmt.Errorf("x: %w", os.ErrDeadlineExceeded), syscall.ETIMEDOUT},
		{fmt.Errorf("x: %w", timeoutErr{}), syscall.ETIMEDOUT},
		{fmt.Errorf("x: %w", io.EOF), syscall.EIO},
		{fmt.Errorf("x: %w", io.ErrUnexpectedEOF), syscall.EIO},
		{&os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}, syscall.ECONNREFUSED},
		{fmt.Errorf("x: %w", syscall.ECONNRESET), syscall.ECONNRESET},
		{fmt.Errorf("x: %w", ErrMalformed), syscall.ECONNABORTED},
		{ErrNoAcceptableMethod, syscall.ECONNABORTED},
		{errors.New("other"), syscall.ECONNABORTED},
	}
	for _, tt := range tests {
		if got := Errno(tt.err); got != tt.want {
			t.Errorf("Errno(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
