package fdpass

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"golang.org/x/sys/unix"
)

func pair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

// A descriptor and its message arrive together; the descriptor works and is close-on-exec.
func TestSendReceive(t *testing.T) {
	a, b := pair(t)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	if err := Send(a, []byte("hello"), p[1]); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	msg, fd, err := Receive(b, 64)
	if err != nil || string(msg) != "hello" || fd < 0 {
		t.Fatalf("Receive = %q, %d, %v", msg, fd, err)
	}
	defer unix.Close(fd)
	if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
		t.Error("received descriptor is not close-on-exec")
	}
	if _, err := unix.Write(fd, []byte("x")); err != nil {
		t.Fatalf("write to the received pipe: %v", err)
	}
	buf := make([]byte, 1)
	if n, _ := unix.Read(p[0], buf); n != 1 || buf[0] != 'x' {
		t.Fatal("the received descriptor is not the pipe sent")
	}

	// A message without a descriptor.
	if err := Send(a, []byte("no fd"), -1); err != nil {
		t.Fatal(err)
	}
	if msg, fd, err := Receive(b, 64); err != nil || string(msg) != "no fd" || fd != -1 {
		t.Fatalf("Receive = %q, %d, %v", msg, fd, err)
	}
}

// An error is received as the errno the sender had, with its text: errors.Is and errors.As (how
// the supervisor picks the program's errno) see it through any wrapping.
func TestErrnoArrives(t *testing.T) {
	a, b := pair(t)
	for _, errno := range []unix.Errno{unix.EMFILE, unix.EAFNOSUPPORT} {
		sent := fmt.Errorf("socket: %w", errno)
		if err := SendError(a, sent); err != nil {
			t.Fatal(err)
		}
		_, fd, err := Receive(b, 512)
		if fd != -1 {
			t.Errorf("descriptor %d with an error", fd)
		}
		wrapped := fmt.Errorf("in the sandbox: %w", err)
		var got unix.Errno
		if !errors.As(wrapped, &got) || got != errno || !errors.Is(wrapped, errno) {
			t.Errorf("sent %v, received %v (errno %d)", sent, err, got)
		}
		if err.Error() != sent.Error() {
			t.Errorf("text %q, want %q", err, sent)
		}
	}
	// An error without an errno unwraps to nothing.
	SendError(a, errors.New("no errno here"))
	_, _, err := Receive(b, 512)
	var fe *Error
	if !errors.As(err, &fe) || fe.Errno != 0 || fe.Text != "no errno here" || fe.Unwrap() != nil {
		t.Fatalf("received %#v", err)
	}
}

// The other side closing is io.EOF; more than one descriptor is refused, and none is left open.
func TestEOFAndTooMany(t *testing.T) {
	a, b := pair(t)
	var p [2]int
	unix.Pipe2(p[:], unix.O_CLOEXEC)
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if err := unix.Sendmsg(a, []byte{tagMessage}, unix.UnixRights(p[0], p[1]), nil, 0); err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	if _, fd, err := Receive(b, 64); err == nil || fd != -1 {
		t.Fatalf("two descriptors: fd %d, err %v", fd, err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after a refused message, %d before", after, before)
	}
	unix.Shutdown(a, unix.SHUT_WR)
	if _, _, err := Receive(b, 64); err != io.EOF {
		t.Fatalf("after the peer's shutdown: %v, want EOF", err)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	n := 0
	for fd := 0; fd < 1024; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			n++
		}
	}
	return n
}
