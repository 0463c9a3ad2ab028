package seccomp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
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

// TestAddFDUnderSignals installs sockets into a traced child, with ADDFD then SEND (AddFD), while
// the supervisor is interrupted: (a) SIGURG, what the Go runtime itself uses to preempt, at the
// handling thread and at the process, as the runtime and the race detector hit the supervisor's
// threads; (b) the whole process stopped and continued (SIGSTOP, SIGCONT), as job control and the
// cgroup freezer do. Every socket() must come back as a fresh datagram socket, a descriptor the
// child did not hold; and once the child's table is full (RLIMIT_NOFILE), socket() must fail with
// EMFILE, answered by the handler. (Unix datagram sockets: the test opens no network socket
// outside a test namespace; any descriptor shows the bug.)
//
// The atomic ADDFD with SECCOMP_ADDFD_FLAG_SEND fails both: an interrupted wait withdraws the
// descriptor after the notification was marked replied, and socket() returns 0 (seen in CI as
// "SECCOMP_IOCTL_NOTIF_ADDFD: operation now in progress"). Blocking every signal on the thread
// for the ioctl fixes (a) but not (b): a group stop wakes every thread of the process whatever
// its mask (see Listener.AddFD).
func TestAddFDUnderSignals(t *testing.T) {
	if os.Getenv(addFDChildEnv) == "1" {
		addFDChild()
		return
	}
	if err := CheckKernel(); err != nil {
		netnstest.Skip(t, "%v", err)
	}
	t.Run("SIGURG", func(t *testing.T) { testAddFDUnderSignals(t, false) })
	t.Run("SIGSTOP", func(t *testing.T) { testAddFDUnderSignals(t, true) })
}

func testAddFDUnderSignals(t *testing.T, stops bool) {
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
	if stops {
		// The process cannot continue itself: a shell does both, and continues it once more
		// when told to end (its last STOP may come after the TERM).
		st := exec.Command("sh", "-c", `trap 'kill -CONT $1; exit 0' TERM; while :; do kill -STOP $1; kill -CONT $1; done`, "sh", strconv.Itoa(os.Getpid()))
		if err := st.Start(); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal(err)
		}
		defer func() {
			st.Process.Signal(unix.SIGTERM)
			st.Wait()
		}()
	}
	wg.Add(1)
	go func() {
		// The signal source: SIGURG (what the runtime itself uses to preempt) at the handler
		// thread, and now and then at the process (delivered to whichever thread allows it).
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			if t := tid.Load(); t != 0 {
				unix.Tgkill(os.Getpid(), int(t), unix.SIGURG)
			}
			if i%4 == 0 {
				unix.Kill(os.Getpid(), unix.SIGURG)
			}
			time.Sleep(5 * time.Microsecond)
		}
	}()

	var failures []string
	served, emfile := 0, 0
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
				l.Send(&Resp{ID: n.ID, Val: -1, Error: -int32(unix.ENOBUFS)})
				continue
			}
			newfd, err := l.AddFD(n.ID, fd, false)
			if err == nil {
				err = l.Send(&Resp{ID: n.ID, Val: int64(newfd)})
			}
			unix.Close(fd)
			if errors.Is(err, unix.EMFILE) {
				// The child's table is full: the call is still pending, and gets the errno.
				emfile++
				err = l.Send(&Resp{ID: n.ID, Val: -1, Error: -int32(unix.EMFILE)})
			}
			if err != nil && len(failures) < 5 {
				failures = append(failures, err.Error())
			}
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
		t.Errorf("%d calls served, installing failed: %v", served, failures)
	}
	if werr != nil {
		t.Errorf("child: %v\n%s", werr, out)
	}
	if emfile != 1 {
		t.Errorf("%d installs failed with EMFILE, want 1 (the child's last call)", emfile)
	}
	t.Logf("%d sockets installed under signals", served)
}

// addFDHeld is how many of its sockets the child holds open at a time: a descriptor installed
// twice, or a number the child already held, shows as one of them.
const addFDHeld = 8

// addFDChild runs in the child: it filters socket() to the listener, hands the listener to the
// parent (fd 3) and checks that every socket() returns a new datagram socket, then that socket()
// fails with EMFILE when its descriptor table is full.
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
	held := make([]int, 0, addFDHeld)
	for i := 0; i < addFDCalls; i++ {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		if err != nil {
			fmt.Printf("socket %d: %v\n", i, err)
			bad++
			continue
		}
		var st unix.Stat_t
		ferr := unix.Fstat(fd, &st)
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if ferr != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK || err != nil || typ != unix.SOCK_DGRAM || fd <= 2 || slices.Contains(held, fd) {
			fmt.Printf("socket %d returned fd %d, not a new datagram socket (mode %#o %v, SO_TYPE %d %v, held %v)\n", i, fd, st.Mode, ferr, typ, err, held)
			bad++
			continue
		}
		if len(held) == addFDHeld {
			unix.Close(held[0])
			held = append(held[:0], held[1:]...)
		}
		held = append(held, fd)
	}
	// A full table: the lowest free descriptor is the limit, so none is left below it.
	free, err := unix.Dup(0)
	if err != nil {
		fmt.Println("dup:", err)
		os.Exit(2)
	}
	unix.Close(free)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Println("getrlimit:", err)
		os.Exit(2)
	}
	full := lim
	full.Cur = uint64(free)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &full); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(2)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	if err != unix.EMFILE {
		fmt.Printf("socket with a full descriptor table: fd %d, %v; want EMFILE\n", fd, err)
		bad++
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
