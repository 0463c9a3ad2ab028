package seccomp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/netnstest"
)

// addFDChildEnv makes the test binary act as the traced child of TestAddFDUnderSignals.
const addFDChildEnv = "SECCOMP_TEST_ADDFD_CHILD"

// addFDCalls is how many socket() calls the child makes.
const addFDCalls = 3000

// TestAddFDUnderSignals installs sockets into a traced child while the handling thread is hit by a
// stream of signals, as the Go runtime's preemption (SIGURG) and the race detector hit the
// supervisor's threads. An ADDFD with SECCOMP_ADDFD_FLAG_SEND whose wait is interrupted has already
// marked the notification replied; the kernel restarts the ioctl (SA_RESTART), which then fails
// with EINPROGRESS, and the program's socket() returns 0, a descriptor it never asked for. Seen in
// CI as "SECCOMP_IOCTL_NOTIF_ADDFD: operation now in progress". Every socket() must come back as
// a fresh datagram socket. (Unix datagram sockets: the test opens no network socket outside a
// test namespace; any descriptor shows the bug.)
func TestAddFDUnderSignals(t *testing.T) {
	if os.Getenv(addFDChildEnv) == "1" {
		addFDChild()
		return
	}
	if err := CheckKernel(); err != nil {
		netnstest.Skip(t, "%v", err)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	parentEnd := os.NewFile(uintptr(pair[0]), "parent")
	childEnd := os.NewFile(uintptr(pair[1]), "child")
	defer parentEnd.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestAddFDUnderSignals$", "-test.count=1")
	cmd.Env = append(os.Environ(), addFDChildEnv+"=1")
	cmd.ExtraFiles = []*os.File{childEnd}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	childEnd.Close()

	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(parentEnd.Fd()), buf, oob, 0)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("receive listener: %v\n%s", err, out)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no listener from child (%v)\n%s", err, out)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("no listener from child (%v)", err)
	}
	l := NewListener(fds[0])

	var tid atomic.Int32
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// The signal source: SIGURG (what the runtime itself uses to preempt) at the handler thread.
		defer wg.Done()
		for !stop.Load() {
			if t := tid.Load(); t != 0 {
				unix.Tgkill(os.Getpid(), int(t), unix.SIGURG)
			}
			time.Sleep(5 * time.Microsecond)
		}
	}()

	var failures []string
	served := 0
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid.Store(int32(unix.Gettid()))
		defer tid.Store(0)
		var n Notif
		for {
			more, err := l.Wait()
			if err != nil {
				failures = append(failures, err.Error())
			}
			if err != nil || !more {
				return
			}
			if err := l.Recv(&n); err != nil {
				if errors.Is(err, ErrNotifGone) {
					continue
				}
				failures = append(failures, err.Error())
				return
			}
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
			if err != nil {
				l.Send(&Resp{ID: n.ID, Val: -1, Error: -int32(unix.EMFILE)})
				continue
			}
			newfd, err := l.AddFD(n.ID, fd, false)
			if err == nil {
				err = l.Send(&Resp{ID: n.ID, Val: int64(newfd)})
			}
			if err != nil && len(failures) < 5 {
				failures = append(failures, err.Error())
			}
			unix.Close(fd)
			served++
		}
	}()
	stop.Store(true)
	wg.Wait()
	// If serving stopped early, the child's pending socket() fails (ENOSYS) once the listener
	// is closed, and the child reports it, instead of both waiting for ever.
	l.Close()
	werr := cmd.Wait()
	if len(failures) > 0 {
		t.Errorf("%d calls served, ADDFD failed: %v", served, failures)
	}
	if werr != nil {
		t.Errorf("child: %v\n%s", werr, out)
	}
	t.Logf("%d sockets installed under signals", served)
}

// addFDChild runs in the child: it filters socket() to the listener, hands the listener to the
// parent (fd 3) and checks that every socket() returns a new datagram socket.
func addFDChild() {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Println("no_new_privs:", err)
		os.Exit(2)
	}
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_SOCKET, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_USER_NOTIF},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	lfd, err := InstallFilter(prog)
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	if err := unix.Sendmsg(3, []byte{0}, unix.UnixRights(lfd), nil, 0); err != nil {
		fmt.Println("send listener:", err)
		os.Exit(2)
	}
	unix.Close(lfd)
	unix.Close(3)
	bad := 0
	for i := 0; i < addFDCalls; i++ {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		if err != nil {
			fmt.Printf("socket %d: %v\n", i, err)
			bad++
			continue
		}
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil || typ != unix.SOCK_DGRAM || fd <= 2 {
			fmt.Printf("socket %d returned fd %d, not a new datagram socket (SO_TYPE %d, %v)\n", i, fd, typ, err)
			bad++
			continue
		}
		unix.Close(fd)
	}
	if bad > 0 {
		os.Exit(1)
	}
	os.Exit(0)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}
