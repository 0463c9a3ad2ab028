// Package fdpass is the one way torsocks passes a descriptor between its processes: one message
// over a unix socket that keeps messages whole (SOCK_SEQPACKET), carrying either a short text with
// at most one descriptor (SCM_RIGHTS; up to MaxMany with SendMany and ReceiveMany), or an error as its errno number and its text. The launch
// helper hands the seccomp listener to the supervisor with it, and the UDP sandbox's factory the
// sockets it makes; an error the other side sent comes back as an *Error that unwraps to its errno,
// so that EMFILE or EAFNOSUPPORT reach the program as themselves.
//
// Wire format: 'M' then the text (the descriptor, if any, rides along), or 'E', the errno as a
// little-endian uint32 (0: none) and the text.
package fdpass

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

const (
	tagMessage = 'M'
	tagError   = 'E'
)

// Error is an error the other side sent: its errno (0 if it had none) and its text.
type Error struct {
	Errno unix.Errno
	Text  string
}

func (e *Error) Error() string { return e.Text }

// Unwrap returns the errno, so that errors.Is(err, unix.EMFILE) and errors.As(err, &errno) see it.
func (e *Error) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// Send sends msg with descriptor fd attached (fd < 0: none) as one message on conn.
func Send(conn int, msg []byte, fd int) error {
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	return unix.Sendmsg(conn, append([]byte{tagMessage}, msg...), oob, nil, 0)
}

// SendError sends err as one message on conn: the unix.Errno it wraps (0 if none) and its text.
func SendError(conn int, err error) error {
	var errno unix.Errno
	errors.As(err, &errno)
	b := binary.LittleEndian.AppendUint32([]byte{tagError}, uint32(errno))
	return unix.Sendmsg(conn, append(b, err.Error()...), nil, nil, 0)
}

// SendMany sends msg with the descriptors fds attached (at most MaxMany) as one message on conn.
func SendMany(conn int, msg []byte, fds []int) error {
	return unix.Sendmsg(conn, append([]byte{tagMessage}, msg...), unix.UnixRights(fds...), nil, 0)
}

// MaxMany is the most descriptors SendMany sends and ReceiveMany receives in one message.
const MaxMany = 64

// Receive receives one message of at most maxText bytes of text from conn. It returns the text and
// the descriptor that came with it (-1 if none; close-on-exec, the caller's to close), or the
// *Error the other side sent, or io.EOF when the other side closed its end.
func Receive(conn int, maxText int) (msg []byte, fd int, err error) {
	msg, fds, err := receive(conn, maxText, 1)
	if err != nil || len(fds) == 0 {
		return msg, -1, err
	}
	return msg, fds[0], nil
}

// ReceiveMany is Receive for a message carrying up to MaxMany descriptors (SendMany).
func ReceiveMany(conn int, maxText int) (msg []byte, fds []int, err error) {
	return receive(conn, maxText, MaxMany)
}

func receive(conn int, maxText, maxFDs int) (msg []byte, fds []int, err error) {
	buf := make([]byte, 1+maxText)
	oob := make([]byte, unix.CmsgSpace(4*maxFDs))
	n, oobn, flags, _, err := unix.Recvmsg(conn, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, nil, err
	}
	fds, rightsErr := rights(oob[:oobn])
	fail := func(err error) ([]byte, []int, error) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, nil, err
	}
	switch {
	case rightsErr != nil:
		return fail(rightsErr)
	case n == 0 && len(fds) == 0:
		return nil, nil, io.EOF
	case flags&unix.MSG_CTRUNC != 0:
		// The kernel drops a descriptor it cannot install in this process: its table is full
		// (the buffer is sized for what may come).
		return fail(fmt.Errorf("the descriptor sent did not arrive (MSG_CTRUNC): %w", unix.EMFILE))
	case flags&unix.MSG_TRUNC != 0:
		return fail(fmt.Errorf("message longer than %d bytes", maxText))
	case len(fds) > maxFDs && maxFDs == 1:
		return fail(fmt.Errorf("%d descriptors in one message, want at most one", len(fds)))
	case len(fds) > maxFDs:
		return fail(fmt.Errorf("%d descriptors in one message, want at most %d", len(fds), maxFDs))
	case n > 0 && buf[0] == tagMessage:
		return buf[1:n], fds, nil
	case n >= 5 && buf[0] == tagError:
		return fail(&Error{Errno: unix.Errno(binary.LittleEndian.Uint32(buf[1:5])), Text: string(buf[5:n])})
	}
	return fail(fmt.Errorf("malformed message (%d bytes)", n))
}

// rights returns the descriptors of the SCM_RIGHTS messages in oob.
func rights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			return fds, fmt.Errorf("control message: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}
