// Package sandbox makes the network namespace where the traced program's UDP sockets live: it has
// only a loopback interface, and every IPv4 and IPv6 address is local to it (a "local" route for
// 0.0.0.0/0 and ::/0), so a datagram sent from there to any address and port is delivered inside
// the namespace and can never leave the machine. The DNS responder listens on port 53 of every
// address there and answers as whichever nameserver the program asked; datagrams to any other
// port find nothing (and are logged by a catch-all).
//
// Programs that never use UDP pay nothing for this: no send call needs a notification. UDP sockets
// are created here by the supervisor (on the one OS thread that lives in the namespace) and
// installed in the program with SECCOMP_IOCTL_NOTIF_ADDFD.
package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sandbox is a network namespace held by one locked OS thread.
type Sandbox struct {
	reqs   chan request
	cookie uint64 // the namespace's SO_NETNS_COOKIE
}

type request struct {
	domain, typ, proto int
	reply              chan result
}

type result struct {
	fd  int
	err error
}

// New creates the namespace (needs CAP_SYS_ADMIN: root). The thread that holds it is never given
// back to the Go scheduler.
func New() (*Sandbox, error) {
	s := &Sandbox{reqs: make(chan request)}
	ready := make(chan error, 1)
	go s.hold(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sandbox) hold(ready chan<- error) {
	// Locked and never unlocked: when this goroutine ends, the runtime ends the thread with it,
	// so no other goroutine ever runs inside the sandbox namespace.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		ready <- fmt.Errorf("create the UDP sandbox network namespace: %w", err)
		return
	}
	if err := setup(); err != nil {
		ready <- fmt.Errorf("set up the UDP sandbox network namespace: %w", err)
		return
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		ready <- fmt.Errorf("sandbox socket: %w", err)
		return
	}
	s.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	unix.Close(fd)
	if err != nil {
		ready <- fmt.Errorf("SO_NETNS_COOKIE: %w", err)
		return
	}
	ready <- nil
	for r := range s.reqs {
		fd, err := unix.Socket(r.domain, r.typ, r.proto)
		r.reply <- result{fd, err}
	}
}

// Socket creates a socket inside the sandbox.
func (s *Sandbox) Socket(domain, typ, proto int) (int, error) {
	reply := make(chan result, 1)
	s.reqs <- request{domain, typ, proto, reply}
	r := <-reply
	if r.err != nil {
		return -1, fmt.Errorf("socket(%d, %d, %d) in the UDP sandbox: %w", domain, typ, proto, r.err)
	}
	return r.fd, nil
}

// Contains reports whether socket fd lives in the sandbox namespace.
func (s *Sandbox) Contains(fd int) bool {
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	return err == nil && c == s.cookie
}

// setup brings lo up and makes every address local to it.
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
	return nil
}

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
