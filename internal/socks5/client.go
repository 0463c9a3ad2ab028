package socks5

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"syscall"
)

// ReadReply reads exactly one reply from r: the 4-byte header (version, code, reserved,
// ATYP), then 4, 16 or 1+len address bytes as the ATYP says, then 2 port bytes. It never
// reads a byte more, so data a destination sends first (SSH, SMTP banners) stays in r.
//
// A bad version or an unknown ATYP in a success reply is ErrMalformed. A non-zero code
// returns the Reply read so far and a *ReplyError; the address part of such a reply is
// read when it is well formed, but a missing or unknown one does not hide the code. A
// reply cut short returns an error wrapping io.EOF or io.ErrUnexpectedEOF.
func ReadReply(r io.Reader) (Reply, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Reply{}, fmt.Errorf("reading SOCKS5 reply header: %w", err)
	}
	if hdr[0] != Version {
		return Reply{}, fmt.Errorf("%w: reply version 0x%02x", ErrMalformed, hdr[0])
	}
	rep := Reply{Code: hdr[1]}
	err := readBound(r, hdr[3], &rep)
	if rep.Code != ReplySucceeded {
		return rep, &ReplyError{Code: rep.Code}
	}
	return rep, err
}

// readBound reads the address and port announced by atyp into rep.
func readBound(r io.Reader, atyp byte, rep *Reply) error {
	var buf [255 + 2]byte
	var n int
	switch atyp {
	case AtypIPv4:
		n = 4
	case AtypIPv6:
		n = 16
	case AtypDomain:
		if _, err := io.ReadFull(r, buf[:1]); err != nil {
			return fmt.Errorf("reading SOCKS5 reply name length: %w", noEOF(err))
		}
		n = int(buf[0])
	default:
		return fmt.Errorf("%w: reply address type 0x%02x", ErrMalformed, atyp)
	}
	if _, err := io.ReadFull(r, buf[:n+2]); err != nil {
		return fmt.Errorf("reading SOCKS5 reply address: %w", noEOF(err))
	}
	switch atyp {
	case AtypIPv4:
		rep.Addr = netip.AddrFrom4([4]byte(buf[:4]))
	case AtypIPv6:
		rep.Addr = netip.AddrFrom16([16]byte(buf[:16]))
	default:
		rep.Name = string(buf[:n])
	}
	rep.Port = uint16(buf[n])<<8 | uint16(buf[n+1])
	return nil
}

// noEOF turns io.EOF in the middle of a message into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Handshake runs the whole client exchange on rw, step by step as torsocks does:
// greeting offering one method (0x02 if auth is non-nil, else 0x00), the 2-byte method
// selection, the RFC 1929 sub-negotiation and its 2-byte answer when auth is non-nil,
// the request, and the reply (see ReadReply). Each message goes out in a single Write
// and nothing past the reply is read. The request is checked before anything is sent.
func Handshake(rw io.ReadWriter, req Request, auth *Auth) (Reply, error) {
	return handshake(rw, req, auth, false)
}

// HandshakePipelined runs the same exchange with one round trip less: without credentials the
// greeting and the request go in one Write; with them, the greeting goes alone (Tor loses its
// method selection when a sub-negotiation arrives with the greeting) and the sub-negotiation and
// the request go together. Tor's SocksPort parses what is left in its buffer after each message;
// a server that does not may fail the handshake. The answers are read and checked in order,
// exactly as Handshake reads them.
func HandshakePipelined(rw io.ReadWriter, req Request, auth *Auth) (Reply, error) {
	return handshake(rw, req, auth, true)
}

func handshake(rw io.ReadWriter, req Request, auth *Auth, pipelined bool) (Reply, error) {
	msg, err := AppendRequest(nil, req)
	if err != nil {
		return Reply{}, err
	}
	var authMsg []byte
	if auth != nil {
		if authMsg, err = AppendAuth(nil, *auth); err != nil {
			return Reply{}, err
		}
	}

	greeting := AppendGreeting(nil, auth != nil)
	// Tor answers a greeting and a sub-negotiation that arrive together with the
	// sub-negotiation's status only (the method selection is lost): with credentials, only the
	// sub-negotiation and the request are pipelined, after the selection.
	if pipelined && auth == nil {
		all := append(append([]byte{}, greeting...), msg...)
		if err := writeMsg(rw, all, "greeting and request"); err != nil {
			return Reply{}, err
		}
	} else if err := writeMsg(rw, greeting, "greeting"); err != nil {
		return Reply{}, err
	}
	var sel [2]byte
	if _, err := io.ReadFull(rw, sel[:]); err != nil {
		return Reply{}, fmt.Errorf("reading SOCKS5 method selection: %w", err)
	}
	want := greeting[2] // the one method offered
	switch {
	case sel[0] != Version:
		return Reply{}, fmt.Errorf("%w: method selection version 0x%02x", ErrMalformed, sel[0])
	case sel[1] == MethodNoAcceptable:
		return Reply{}, ErrNoAcceptableMethod
	case sel[1] != want:
		return Reply{}, fmt.Errorf("%w: server chose method 0x%02x, offered 0x%02x", ErrMalformed, sel[1], want)
	}

	if auth != nil {
		out := authMsg
		if pipelined {
			out = append(append([]byte{}, authMsg...), msg...)
		}
		if err := writeMsg(rw, out, "username/password"); err != nil {
			return Reply{}, err
		}
		var st [2]byte
		if _, err := io.ReadFull(rw, st[:]); err != nil {
			return Reply{}, fmt.Errorf("reading SOCKS5 authentication status: %w", err)
		}
		// RFC 1929 says version 01; some servers answer 05. Either way only the status matters.
		if st[0] != AuthVersion && st[0] != Version {
			return Reply{}, fmt.Errorf("%w: authentication status version 0x%02x", ErrMalformed, st[0])
		}
		if st[1] != 0 {
			return Reply{}, fmt.Errorf("%w (status 0x%02x)", ErrAuthFailed, st[1])
		}
	}

	if !pipelined {
		if err := writeMsg(rw, msg, "request"); err != nil {
			return Reply{}, err
		}
	}
	return ReadReply(rw)
}

// writeMsg sends b in one Write call.
func writeMsg(w io.Writer, b []byte, what string) error {
	n, err := w.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("sending SOCKS5 %s: %w", what, err)
	}
	return nil
}

// Errno maps an error from Handshake (or from dialling the SOCKS server) to the errno a
// program should see for its connect, following torsocks where it has a rule:
//
//	nil                                   0
//	*ReplyError                           its Errno (torsocks' table)
//	ErrAuthFailed                         EINVAL (as torsocks)
//	ErrInvalidRequest                     EINVAL
//	a wrapped syscall.Errno               itself (ECONNREFUSED to the SOCKS port, ECONNRESET, ...)
//	deadline exceeded / timeouts          ETIMEDOUT
//	io.EOF, io.ErrUnexpectedEOF           EIO (as torsocks: "EOF from Tor")
//	ErrMalformed, ErrNoAcceptableMethod   ECONNABORTED (as torsocks on a bad version/method)
//	anything else                         ECONNABORTED
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var re *ReplyError
	if errors.As(err, &re) {
		return re.Errno()
	}
	if errors.Is(err, ErrAuthFailed) || errors.Is(err, ErrInvalidRequest) {
		return syscall.EINVAL
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return syscall.ETIMEDOUT
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return errno
	}
	var to interface{ Timeout() bool }
	if errors.As(err, &to) && to.Timeout() {
		return syscall.ETIMEDOUT
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return syscall.EIO
	}
	return syscall.ECONNABORTED
}

// Errno returns the errno torsocks gives a connect that got this reply:
// 1, 2, 5, 7, 8 ECONNREFUSED; 3 ENETUNREACH; 4 EHOSTUNREACH; 6 ETIMEDOUT;
// anything else (Tor's 0xF0-0xF7 included) ECONNABORTED.
func (e *ReplyError) Errno() syscall.Errno {
	switch e.Code {
	case ReplyGeneralFailure, ReplyNotAllowed, ReplyConnectionRefused,
		ReplyCommandNotSupported, ReplyAddressNotSupported:
		return syscall.ECONNREFUSED
	case ReplyNetworkUnreachable:
		return syscall.ENETUNREACH
	case ReplyHostUnreachable:
		return syscall.EHOSTUNREACH
	case ReplyTTLExpired:
		return syscall.ETIMEDOUT
	default:
		return syscall.ECONNABORTED
	}
}
