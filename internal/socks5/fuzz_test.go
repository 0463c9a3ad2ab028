package socks5

import (
	"bytes"
	"errors"
	"testing"
)

// replyLen is the length of a well-formed reply starting with b, or -1.
func replyLen(b []byte) int {
	if len(b) < 4 {
		return -1
	}
	switch b[3] {
	case AtypIPv4:
		return 4 + 4 + 2
	case AtypIPv6:
		return 4 + 16 + 2
	case AtypDomain:
		if len(b) < 5 {
			return -1
		}
		return 4 + 1 + int(b[4]) + 2
	}
	return -1
}

func FuzzReadReply(f *testing.F) {
	f.Add([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0x23, 0x82})
	f.Add(append([]byte{5, 0, 0, 4}, make([]byte, 18)...))
	f.Add([]byte("\x05\x00\x00\x03\x07example\x00\x2aSSH-2.0-x\r\n"))
	f.Add([]byte{5, 0xf3, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{5, 0, 0, 3, 0xff})
	f.Add([]byte{4, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		rep, err := ReadReply(r)
		used := len(in) - r.Len()
		want := replyLen(in)
		if err == nil {
			if in[0] != Version || in[1] != 0 || want < 0 || used != want {
				t.Fatalf("accepted % x using %d bytes (well-formed length %d)", in, used, want)
			}
			if in[3] == AtypDomain && len(rep.Name) != int(in[4]) {
				t.Fatalf("name %q, length byte %d", rep.Name, in[4])
			}
			if port := uint16(in[used-2])<<8 | uint16(in[used-1]); rep.Port != port {
				t.Fatalf("port %d, want %d", rep.Port, port)
			}
			return
		}
		if want >= 0 && used > want {
			t.Fatalf("over-read: used %d of % x, reply is %d bytes", used, in, want)
		}
		if used > 4 && want < 0 {
			t.Fatalf("read %d bytes past a header with bad ATYP", used)
		}
		var re *ReplyError
		if errors.As(err, &re) != (len(in) >= 4 && in[0] == Version && in[1] != 0) {
			t.Fatalf("input % x: error %v", in, err)
		}
		if Errno(err) == 0 {
			t.Fatalf("Errno(%v) = 0", err)
		}
	})
}

// scripted is a server whose every byte comes from the fuzzer.
type scripted struct {
	r       *bytes.Reader
	written []byte
	writes  int
}

func (s *scripted) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *scripted) Write(p []byte) (int, error) {
	s.writes++
	s.written = append(s.written, p...)
	return len(p), nil
}

func FuzzHandshake(f *testing.F) {
	f.Add([]byte("\x05\x00\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x50"), "example.com", uint16(80), byte(CmdConnect), false)
	f.Add([]byte("\x05\x02\x01\x00\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x50SSH-2.0"), "203.0.113.10", uint16(22), byte(CmdConnect), true)
	f.Add([]byte("\x05\x02\x01\x01"), "h", uint16(1), byte(CmdConnect), true)
	f.Add([]byte("\x05\xff"), "h", uint16(1), byte(CmdResolve), false)
	f.Add([]byte("\x05\x00\x05\x00\x00\x03\x03abc\x00\x2a"), "192.0.2.1", uint16(0), byte(CmdResolvePTR), false)
	f.Add([]byte("\x05\x00\x05\xf2\x00\x01"), "x.onion", uint16(443), byte(CmdConnect), false)
	f.Fuzz(func(t *testing.T, server []byte, host string, port uint16, cmd byte, withAuth bool) {
		var auth *Auth
		if withAuth {
			auth = &Auth{Username: "user", Password: "pw"}
		}
		s := &scripted{r: bytes.NewReader(server)}
		req := Request{Cmd: cmd, Host: host, Port: port}
		_, err := Handshake(s, req, auth)
		used := len(server) - s.r.Len()
		if _, reqErr := AppendRequest(nil, req); reqErr != nil {
			if s.writes != 0 || err == nil {
				t.Fatalf("invalid request %+v: %d writes, err %v", req, s.writes, err)
			}
			return
		}
		if s.writes == 0 || !bytes.Equal(s.written[:3], AppendGreeting(nil, withAuth)) {
			t.Fatalf("greeting % x", s.written)
		}
		// The server's bytes the handshake may consume: 2 (method) [+ 2 (auth)] + the reply.
		pre := 2
		if withAuth {
			pre = 4
		}
		if err == nil {
			if want := replyLen(server[pre:]); used != pre+want {
				t.Fatalf("used %d bytes of % x, want %d", used, server, pre+want)
			}
			return
		}
		if Errno(err) == 0 {
			t.Fatalf("Errno(%v) = 0", err)
		}
		if used > pre && len(server) >= pre {
			if want := replyLen(server[pre:]); want >= 0 && used > pre+want {
				t.Fatalf("over-read: used %d of % x", used, server)
			}
		}
	})
}
