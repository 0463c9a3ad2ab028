// Package sandbox makes the network namespace where the traced program's UDP sockets live: it has
// only a loopback interface, and every IPv4 and IPv6 address is local to it (a "local" route for
// 0.0.0.0/0 and ::/0), so a datagram sent from there to any address and port is delivered inside
// the namespace and can never leave the machine. The DNS responder listens on port 53 of every
// address there and answers as whichever nameserver the program asked; datagrams to any other
// port find nothing (and are logged by a catch-all).
//
// Programs that never use UDP pay nothing for this: the factory is started on first use (Prepare,
// Start), and no send call needs a notification. UDP sockets are created there on the
// supervisor's request (from a pool of sockets made ahead, see poolKey) and
// installed in the program with SECCOMP_IOCTL_NOTIF_ADDFD. The namespace is held by a child process
// (see Sandbox), so it works without root where user namespaces are allowed.
package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/fdpass"
	"github.com/gotorsocks/torsocks/internal/filter"
	"github.com/gotorsocks/torsocks/internal/seccomp"
)

// FactoryArg is the first argument that makes the torsocks binary act as the sandbox's socket
// factory (see RunFactory).
const FactoryArg = "--internal-sandbox"

// Sandbox is a network namespace held by a small child process, the socket factory, which creates
// sockets there on request and passes them back over a unix socket (internal/fdpass: SCM_RIGHTS, errors as their errno). A process is
// needed because an unprivileged user can only make a network namespace inside a new user
// namespace, which a multi-threaded Go program cannot enter; root gets the same design without the
// user namespace.
//
// A Sandbox is made in two steps so that a program that never uses UDP pays nothing for it: Prepare
// makes the value (no process, no namespace), Start starts the factory and waits until it is ready.
// Spawn starts the process without waiting, for callers that must start it early (see Spawn).
type Sandbox struct {
	self string

	mu       sync.Mutex // guards conn, pid, spawnErr, closed: one request at a time
	conn     int        // the supervisor's end of the socketpair with the factory (-1: none)
	pid      int        // the factory's (0: not spawned)
	spawnErr error
	closed   bool

	startOnce sync.Once
	startErr  error
	ready     atomic.Bool // cookie is set: the factory answered its first request
	cookie    uint64      // the namespace's SO_NETNS_COOKIE

	poolMu    sync.Mutex // guards pool, refilling, refilled, poolShut, pooled
	pool      map[poolKey][]int
	refilling map[poolKey]bool
	refilled  map[poolKey]bool // kinds refilled before: the next refill is poolBatchMax
	poolShut  bool
	pooled    int            // sockets in the pool and asked for by refills in flight, all kinds
	poolCap   int            // the most pooled may be (poolCapFor); set by Prepare
	refills   sync.WaitGroup // refills in flight; Added under poolMu while !poolShut, so Close can wait
}

// The pool: sockets made ahead, per kind, so that a program's UDP socket (one per name lookup)
// or sealed TCP socket (one per connection) costs no round trip to the factory. A pooled socket
// is what the factory would make on demand, made a little earlier: same family, type and
// protocol, unbound, no option set (nothing in the namespace can reach an unbound socket, and
// nothing else holds it). SOCK_NONBLOCK is part of the kind: the factory makes the socket with
// it, so taking one needs no fcntl (two system calls: F_GETFL, F_SETFL) on the way to the
// program; SOCK_CLOEXEC is a descriptor flag, not the socket's, set by whoever installs the
// socket. A protocol of 0 is the family's default (SO_PROTOCOL then reads IPPROTO_UDP or
// IPPROTO_TCP alike), so both share a kind. A kind is pooled once it has been asked for; the pool
// is refilled in the background when fewer than poolLow are left: poolBatch sockets the first
// time, poolBatchMax after that (when fewer than a quarter of it are left) (a kind used again is used a lot: one UDP socket per name lookup;
// every refill wakes the factory, whose Go runtime then keeps its monitor thread waking every 20 µs
// for a millisecond, about 50 context switches on a CPU the program needs). All kinds
// together hold at most poolCap sockets, a sixteenth of the supervisor's descriptor limit: with
// a low limit (prlimit --nofile=48) a pool of each kind would otherwise take the descriptors the
// connections need (TestDNSTCPSurvivesEMFILE), and below 16 nothing is pooled.
type poolKey struct{ domain, typ, proto int } // typ with SOCK_NONBLOCK if asked, without SOCK_CLOEXEC

const (
	poolBatch    = 16
	poolBatchMax = fdpass.MaxMany // 64: one message
	poolLow      = 4
)

// poolKind tells whether sockets of this kind are pooled (UDP and TCP sockets, what programs
// make), and under which key.
func poolKind(domain, typ, proto int) (poolKey, bool) {
	if domain != unix.AF_INET && domain != unix.AF_INET6 {
		return poolKey{}, false
	}
	nonblock := typ & unix.SOCK_NONBLOCK
	switch t := typ &^ (unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC); {
	case t == unix.SOCK_DGRAM && (proto == 0 || proto == unix.IPPROTO_UDP):
		return poolKey{domain, t | nonblock, unix.IPPROTO_UDP}, true
	case t == unix.SOCK_STREAM && (proto == 0 || proto == unix.IPPROTO_TCP):
		return poolKey{domain, t | nonblock, unix.IPPROTO_TCP}, true
	}
	return poolKey{}, false
}

// New starts the socket factory in a new network namespace (and, when not root, a new user
// namespace mapping the caller's uid and gid to root inside it) and waits until it is ready. self
// is the torsocks binary.
func New(self string) (*Sandbox, error) {
	s := Prepare(self)
	if err := s.Start(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Prepare returns a sandbox whose factory (self, the torsocks binary) is not started yet: Socket
// fails and Contains is false until Start has succeeded.
func Prepare(self string) *Sandbox { return &Sandbox{self: self, conn: -1, poolCap: poolCapFor()} }

// poolCapFor is the pool's bound for this process's descriptor limit (see poolKey).
func poolCapFor() int {
	var l unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return int(min(l.Cur/16, 1<<20))
}

// UserNamespaces reports whether this process can be expected to create a user namespace with a
// network namespace in it, as the factory's spawn does when not root, without making them (a
// probe costs 0.4-1 ms on the start's path). The kernel's switches say no when user namespaces
// are off (max_user_namespaces 0, Debian's unprivileged_userns_clone 0) or unprivileged ones get
// no capabilities (Ubuntu's apparmor_restrict_unprivileged_userns 1). Under a seccomp filter (a
// container's, which often refuses them) it tries: a child in new namespaces that execs a path
// that does not exist. A security module that lets the namespaces be made but the factory not
// work in them is found at first use.
func UserNamespaces() bool {
	for _, k := range []struct {
		file string
		ok   func(int) bool
	}{
		{"/proc/sys/user/max_user_namespaces", func(v int) bool { return v > 0 }},
		{"/proc/sys/kernel/unprivileged_userns_clone", func(v int) bool { return v != 0 }},
		{"/proc/sys/kernel/apparmor_restrict_unprivileged_userns", func(v int) bool { return v == 0 }},
	} {
		b, err := os.ReadFile(k.file)
		if err != nil {
			continue // not this kernel's switch
		}
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && !k.ok(v) {
			return false
		}
	}
	if mode, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err == nil && mode == 0 {
		return true
	}
	_, err := syscall.ForkExec("/nonexistent/torsocks-userns-probe", []string{"probe"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET},
	})
	// The child's exec failed (ENOENT), so the clone worked; any other error is the clone's.
	return err == syscall.ENOENT
}

// mapArg, after FactoryArg, asks the factory to write its own uid and gid maps (mapSelf).
const mapArg = "map-self"

// allCaps lists every capability this kernel knows (0 to /proc/sys/kernel/cap_last_cap).
func allCaps() []uintptr {
	last := 40 // CAP_CHECKPOINT_RESTORE, Linux 5.9
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n < 64 {
			last = n
		}
	}
	caps := make([]uintptr, last+1)
	for i := range caps {
		caps[i] = uintptr(i)
	}
	return caps
}

// mapSelf writes the factory's uid and gid maps itself (its user namespace's root is the user who
// ran torsocks, as the supervisor wrote it before), then drops the ambient capabilities it was
// given for that: a process may map its own user in a namespace where it has CAP_SETUID and
// CAP_SETGID (user_namespaces(7)), and capabilities in the new namespace survive the exec only as
// ambient ones, the uid being unmapped until now.
func mapSelf(uid, gid string) error {
	for _, w := range []struct{ file, data string }{
		{"/proc/self/setgroups", "deny"},
		{"/proc/self/uid_map", "0 " + uid + " 1"},
		{"/proc/self/gid_map", "0 " + gid + " 1"},
	} {
		if err := os.WriteFile(w.file, []byte(w.data), 0); err != nil {
			return fmt.Errorf("write %s: %w", w.file, err)
		}
	}
	return unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
}

// Spawn starts the factory process without waiting for it to be ready (Start waits); it does so
// once, and returns the same error afterwards.
func (s *Sandbox) Spawn() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.spawnLocked()
}

func (s *Sandbox) spawnLocked() error {
	switch {
	case s.closed:
		return errors.New("the UDP sandbox is closed")
	case s.pid != 0 || s.spawnErr != nil:
		return s.spawnErr
	}
	s.spawnErr = s.spawn()
	return s.spawnErr
}

func (s *Sandbox) spawn() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	defer unix.Close(fds[1])
	// No Pdeathsig: Linux sends it when the forking thread (not process) ends. The factory ends
	// when its socket to the supervisor closes instead, which happens when the supervisor exits.
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	args := []string{s.self, FactoryArg}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		// In a user namespace of its own, whose maps the factory writes itself (mapSelf): the
		// supervisor could not once it is undumpable (its children inherit the flag, and their
		// /proc files are then root's), so it can spawn the factory on first use, as root does,
		// instead of before the program starts.
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.AmbientCaps = allCaps()
		args = append(args, mapArg, strconv.Itoa(uid), strconv.Itoa(gid))
	}
	// syscall.ForkExec, not os/exec: os.StartProcess first probes pidfd support with a throwaway
	// vfork (once per process, ~0.15 ms), and this spawn is on a non-root start's path. The
	// factory gets /dev/null as stdin and stdout (as os/exec would give it), stderr, and its end
	// of the socketpair as fd 3.
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fds[0])
		return fmt.Errorf("open /dev/null: %w", err)
	}
	defer unix.Close(null)
	pid, err := syscall.ForkExec(s.self, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{uintptr(null), uintptr(null), 2, uintptr(fds[1])},
		Sys:   attr,
	})
	if err != nil {
		unix.Close(fds[0])
		return fmt.Errorf("start the UDP sandbox (a network namespace%s): %w", map[bool]string{true: " in a user namespace", false: ""}[attr.Cloneflags&syscall.CLONE_NEWUSER != 0], err)
	}
	go func() { // reap it whenever it ends (unless torsocks' reaper does first)
		var ws syscall.WaitStatus
		for {
			if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
				return
			}
		}
	}()
	s.conn, s.pid = fds[0], pid
	return nil
}

// Start spawns the factory if Spawn has not, and waits until it is ready. It does so once; later
// calls return the same error.
func (s *Sandbox) Start() error {
	s.startOnce.Do(func() { s.startErr = s.start() })
	return s.startErr
}

func (s *Sandbox) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.spawnLocked(); err != nil {
		return err
	}
	// The factory's first message is its readiness (or why it failed).
	fd, err := s.request(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	s.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("SO_NETNS_COOKIE: %w", err)
	}
	s.ready.Store(true)
	return nil
}

// Close stops the factory (or keeps it from ever starting) and closes the pooled sockets, those
// of refills in flight included: when it returns, the supervisor holds no sandbox socket it did
// not hand out. Sockets already handed out stay in the namespace, which lives as long as they do.
func (s *Sandbox) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.conn >= 0 {
		unix.Close(s.conn)
		s.conn = -1
	}
	s.mu.Unlock()
	s.poolMu.Lock()
	s.poolShut = true // no refill starts after this
	s.poolMu.Unlock()
	// A refill that had its sockets before the factory went closes them itself once it sees
	// poolShut; wait for it, so none is still open when Close returns.
	s.refills.Wait()
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	for _, fds := range s.pool {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	s.pool = nil
	return nil
}

// Socket creates a socket inside the sandbox, which must have been started: a UDP or TCP socket
// comes from the pool when there is one (see poolKey), anything else from the factory.
func (s *Sandbox) Socket(domain, typ, proto int) (int, error) {
	if !s.ready.Load() {
		return -1, errors.New("the UDP sandbox is not started")
	}
	if k, ok := poolKind(domain, typ, proto); ok {
		if fd := s.fromPool(k); fd >= 0 {
			return fd, nil
		}
	}
	return s.SocketUnpooled(domain, typ, proto)
}

// SocketUnpooled creates a socket inside the sandbox, asking the factory for it now (for the
// sandbox's own sockets, which are not what programs make).
func (s *Sandbox) SocketUnpooled(domain, typ, proto int) (int, error) {
	if !s.ready.Load() {
		return -1, errors.New("the UDP sandbox is not started")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.request(domain, typ, proto)
}

// fromPool takes a socket of kind k from the pool (-1 if it has none) and starts a refill when
// it runs low.
func (s *Sandbox) fromPool(k poolKey) int {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	if s.poolShut {
		return -1
	}
	fd := -1
	if fds := s.pool[k]; len(fds) > 0 {
		fd = fds[len(fds)-1]
		s.pool[k] = fds[:len(fds)-1]
		s.pooled--
	}
	batch, low := poolBatch, poolLow
	if s.refilled[k] {
		// A refill of 64 takes the factory a few times longer: start it earlier, so that the
		// pool does not run dry meanwhile (a program's socket() then waits for the refill and a
		// round trip of its own).
		batch, low = poolBatchMax, poolBatchMax/4
	}
	if n := min(batch, s.poolCap-s.pooled); len(s.pool[k]) < low && !s.refilling[k] && n > 0 {
		if s.refilling == nil {
			s.pool, s.refilling, s.refilled = map[poolKey][]int{}, map[poolKey]bool{}, map[poolKey]bool{}
		}
		s.refilling[k], s.refilled[k] = true, true
		s.pooled += n // counted now, so that refills of other kinds stay within poolCap
		s.refills.Add(1)
		go s.refill(k, n)
	}
	return fd
}

// refill asks the factory for n sockets of kind k in one message and pools them (n is counted in
// pooled already).
func (s *Sandbox) refill(k poolKey, n int) {
	defer s.refills.Done()
	s.mu.Lock()
	fds, err := s.requestMany(k.domain, k.typ|unix.SOCK_CLOEXEC, k.proto, n)
	s.mu.Unlock()
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	s.refilling[k] = false
	s.pooled -= n - len(fds) // those the factory did not make (all of them on error)
	if err != nil {
		return // the next socket of this kind asks the factory itself, and gets its error
	}
	if s.poolShut {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return
	}
	s.pool[k] = append(s.pool[k], fds...)
}

// requestMany asks the factory for up to n sockets of one kind in one message; s.mu is held.
func (s *Sandbox) requestMany(domain, typ, proto, n int) ([]int, error) {
	if s.conn < 0 {
		return nil, errors.New("the UDP sandbox is closed")
	}
	req := make([]byte, 16)
	binary.LittleEndian.PutUint32(req[0:], uint32(domain))
	binary.LittleEndian.PutUint32(req[4:], uint32(typ))
	binary.LittleEndian.PutUint32(req[8:], uint32(proto))
	binary.LittleEndian.PutUint32(req[12:], uint32(n))
	if _, err := unix.Write(s.conn, req); err != nil {
		return nil, fmt.Errorf("ask the UDP sandbox for sockets: %w", err)
	}
	_, fds, err := fdpass.ReceiveMany(s.conn, 512)
	if err != nil {
		return nil, fmt.Errorf("socket(%d, %d, %d) x%d in the UDP sandbox: %w", domain, typ, proto, n, err)
	}
	return fds, nil
}

// request asks the factory for one socket; s.mu is held.
func (s *Sandbox) request(domain, typ, proto int) (int, error) {
	if s.conn < 0 {
		return -1, errors.New("the UDP sandbox is closed")
	}
	req := make([]byte, 12)
	binary.LittleEndian.PutUint32(req[0:], uint32(domain))
	binary.LittleEndian.PutUint32(req[4:], uint32(typ))
	binary.LittleEndian.PutUint32(req[8:], uint32(proto))
	if _, err := unix.Write(s.conn, req); err != nil {
		return -1, fmt.Errorf("ask the UDP sandbox for a socket: %w", err)
	}
	_, fd, err := fdpass.Receive(s.conn, 512)
	switch {
	case errors.As(err, new(*fdpass.Error)):
		// The factory's errno (EMFILE, EAFNOSUPPORT...) is kept: it is what the program gets.
		return -1, fmt.Errorf("socket(%d, %d, %d) in the UDP sandbox: %w", domain, typ, proto, err)
	case errors.Is(err, unix.EMFILE):
		// The factory made it, but this process had no descriptor left to receive it in.
		return -1, fmt.Errorf("socket(%d, %d, %d) from the UDP sandbox: %w", domain, typ, proto, err)
	case err != nil:
		return -1, fmt.Errorf("the UDP sandbox did not answer: %v", err)
	case fd < 0:
		return -1, errors.New("the UDP sandbox sent no socket")
	}
	return fd, nil
}

// Contains reports whether socket fd lives in the sandbox namespace.
func (s *Sandbox) Contains(fd int) bool {
	if !s.ready.Load() {
		return false // no socket was ever made there
	}
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	return err == nil && c == s.cookie
}

// RunFactoryIfAsked becomes the socket factory (and never returns) when the process was started
// as one (os.Args[1] is FactoryArg); otherwise it returns at once. The torsocks binary and test
// binaries that start sandboxes call it first thing.
func RunFactoryIfAsked() {
	if len(os.Args) > 1 && os.Args[1] == FactoryArg {
		RunFactory()
	}
}

// RunFactory is the socket factory's whole life (args follow FactoryArg; its socket is fd 3): it
// makes lo up and every address local, then creates sockets on request until the supervisor goes.
func RunFactory() {
	const conn = 3
	unix.CloseOnExec(conn)
	var mapErr error
	if len(os.Args) == 5 && os.Args[2] == mapArg {
		// Before the flag below: with it, /proc/self is root's (see mapSelf).
		mapErr = mapSelf(os.Args[3], os.Args[4])
	}
	// Not attachable by the program (see run.startProgram on the supervisor's own flag); the program's
	// Landlock domain is what stops it when the factory is in a user namespace the user owns.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	fail := func(err error) {
		fdpass.SendError(conn, err)
		os.Exit(1)
	}
	if mapErr != nil {
		unix.Read(conn, make([]byte, 12))
		fail(fmt.Errorf("map the UDP sandbox's user namespace: %w", mapErr))
	}
	if err := setup(); err != nil {
		// Read the first request so the error reaches the supervisor as its answer.
		unix.Read(conn, make([]byte, 12))
		fail(fmt.Errorf("set up the UDP sandbox network namespace: %w", err))
	}
	if err := confine(); err != nil {
		unix.Read(conn, make([]byte, 12))
		fail(fmt.Errorf("confine the UDP sandbox's socket factory: %w", err))
	}
	// A request: domain, type, protocol (and, 16 bytes, how many: one message with all of them;
	// an error only if not even the first could be made).
	req := make([]byte, 16)
	for {
		n, err := unix.Read(conn, req)
		if err != nil || (n != 12 && n != 16) {
			os.Exit(0)
		}
		domain, typ, proto := int(int32(binary.LittleEndian.Uint32(req[0:]))), int(int32(binary.LittleEndian.Uint32(req[4:]))), int(int32(binary.LittleEndian.Uint32(req[8:])))
		count := 1
		if n == 16 {
			count = min(max(int(binary.LittleEndian.Uint32(req[12:])), 1), fdpass.MaxMany)
		}
		var fds []int
		for len(fds) < count {
			fd, err := unix.Socket(domain, typ, proto)
			if err != nil {
				if len(fds) == 0 {
					fdpass.SendError(conn, err) // as its errno: the program gets the same
				}
				break
			}
			fds = append(fds, fd)
		}
		if len(fds) == 0 {
			continue
		}
		if n == 16 {
			err = fdpass.SendMany(conn, nil, fds)
		} else {
			err = fdpass.Send(conn, nil, fds[0])
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		if err != nil {
			os.Exit(0)
		}
	}
}

// setup brings lo up, makes every address local to it and sets the namespace's default TCP
// congestion control (LoopbackCongestion).
func setup() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS lo up: %w", err)
	}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := addLocalDefault(family); err != nil {
			return err
		}
	}
	// Best effort: where /proc/sys cannot be written (a container's read-only one), the
	// supervisor's own sandbox sockets get it by setsockopt instead (TCP_CONGESTION), and only the
	// program's uploads keep the host's default.
	os.WriteFile("/proc/sys/net/ipv4/tcp_congestion_control", []byte(LoopbackCongestion), 0)
	// TIME_WAIT reuse for every connection, as the kernel's default (2) gives it to loopback
	// ones only, by their 127/8 or ::1 address: every connection here is on lo, but to the
	// program's destination addresses. Without it a program that closes first (its sockets keep
	// TIME_WAIT for 60 s, here) ran out of source ports to one destination after ~28 000
	// connects a minute (EADDRNOTAVAIL on the join), where under the C torsocks its sockets to
	// 127.0.0.1:9050 are reused. Best effort too: without it, only that rate fails.
	os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse", []byte("1"), 0)
	return nil
}

// LoopbackCongestion is the TCP congestion control of the namespace's connections (its default,
// set by the factory, and set by the supervisor on its own sandbox sockets): every one of them
// stays on the namespace's loopback, where nothing is ever congested but pacing still costs. A new
// namespace inherits the host's default, often bbr, which paces every socket's sends with a timer;
// through the relay (two loopback connections in a row, one sending by splice in bursts) that cost
// a fifth to a third of the bulk throughput (docs/sealed-network.md). Reno is built into every
// kernel and allowed without privilege, and does not pace. A program that sets its own
// (TCP_CONGESTION) gets its own, as without torsocks.
const LoopbackCongestion = "reno"

// addLocalDefault adds "local 0.0.0.0/0 dev lo table local" (or ::/0) with rtnetlink.
func addLocalDefault(family uint8) error {
	nl, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(nl)
	if err := unix.Bind(nl, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind netlink: %w", err)
	}
	const loIndex = 1 // lo is always ifindex 1 in a new namespace
	msg := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofRtMsg+8)
	binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.LittleEndian.PutUint16(msg[4:], unix.RTM_NEWROUTE)
	binary.LittleEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	binary.LittleEndian.PutUint32(msg[8:], 1)
	rt := (*unix.RtMsg)(unsafe.Pointer(&msg[unix.NLMSG_HDRLEN]))
	*rt = unix.RtMsg{Family: family, Table: unix.RT_TABLE_LOCAL, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_HOST, Type: unix.RTN_LOCAL}
	attr := msg[unix.NLMSG_HDRLEN+unix.SizeofRtMsg:]
	binary.LittleEndian.PutUint16(attr[0:], 8)
	binary.LittleEndian.PutUint16(attr[2:], unix.RTA_OIF)
	binary.LittleEndian.PutUint32(attr[4:], loIndex)
	if err := unix.Sendto(nl, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("RTM_NEWROUTE: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(nl, buf, 0)
	if err != nil {
		return fmt.Errorf("RTM_NEWROUTE ack: %w", err)
	}
	if n < unix.NLMSG_HDRLEN+4 {
		return errors.New("RTM_NEWROUTE: short answer")
	}
	if binary.LittleEndian.Uint16(buf[4:]) == unix.NLMSG_ERROR {
		if code := int32(binary.LittleEndian.Uint32(buf[unix.NLMSG_HDRLEN:])); code != 0 {
			return fmt.Errorf("RTM_NEWROUTE (family %d): %w", family, unix.Errno(-code))
		}
		return nil
	}
	return errors.New("RTM_NEWROUTE: unexpected answer")
}

// confine makes sure that the factory, whoever takes it over, can open no connection
// (filter.BuildFactory).
func confine() error {
	prog, err := filter.BuildFactory(filter.HostABIs)
	if err != nil {
		return err
	}
	return seccomp.Confine(prog)
}
