package supervisor

import (
	"sync"

	"golang.org/x/sys/unix"
)

// sockCache remembers what the supervisor knows of the sockets it made in the sandbox itself
// (socket(): Sandbox.Socket, installed with ADDFD), by SO_COOKIE: family, type, protocol, and
// that the socket lives in the sandbox. A connect on such a socket then asks its copy one
// getsockopt(SO_COOKIE) instead of SO_DOMAIN, SO_TYPE, SO_PROTOCOL, SO_COOKIE and
// SO_NETNS_COOKIE (Sandbox.Contains).
//
// Why it is safe, whatever the program does:
//   - The key names the socket, not a descriptor (see docs/registry.md, "Why SO_COOKIE"): every
//     dup, fork or SCM_RIGHTS copy of the socket has the same cookie, so it does not matter which
//     descriptor, process or thread the connect comes from. Cookies are never reused (a 64-bit
//     counter in the kernel, net/core/sock_diag.c, sock_gen_cookie), so a hit is the very socket
//     the entry was made for, never a later one; an entry of a closed socket is merely dead
//     weight until it is evicted.
//   - What an entry says cannot change in the socket's life: its network namespace (sk_net is
//     set at creation), its type and protocol; its family only by IPV6_ADDRFORM, which the
//     filter refuses (filter/sockopt.go), and even a stale family would only fail a connect
//     inside the sandbox.
//   - The values are not read from the program: they are the arguments the supervisor made the
//     socket with itself, and only for the combinations whose protocol tcp(7), udp(7) and ipv6(7)
//     document (SOCK_STREAM with 0 or IPPROTO_TCP is TCP, SOCK_DGRAM with 0 or IPPROTO_UDP is
//     UDP); any other socket is not cached. TestSockCacheMatchesKernel compares with the kernel.
//   - A miss (a socket made before the cache knew it, evicted, inherited, or not the
//     supervisor's) reads everything from the kernel as before.
//
// Bound: two generations of at most sockCacheGen entries each; when the current one is full it
// becomes the old one and the old one is dropped. A hit in the old generation moves the entry to
// the current one, so sockets still in use survive a turn.
type sockCache struct {
	mu       sync.Mutex        // guards cur and old
	cur, old map[uint64]uint32 // cookie -> what the socket is (pack: 12 bytes an entry, not 56)
}

const sockCacheGen = 4096

// sockTypeMask is the kernel's SOCK_TYPE_MASK: the type without SOCK_NONBLOCK and SOCK_CLOEXEC
// (socket() fails with EINVAL on any other flag).
const sockTypeMask = 0xf

// put records the socket fd the supervisor has just made in the sandbox with socket(domain,
// typ, proto), if its protocol is one the man pages document for those arguments. It costs one
// getsockopt(SO_COOKIE) on fd.
func (sc *sockCache) put(fd, domain, typ, proto int) {
	si, ok := madeSockInfo(domain, typ, proto)
	if !ok {
		return
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil || cookie == 0 {
		return
	}
	si.cookie = cookie
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.add(si)
}

// add stores si (mu held).
func (sc *sockCache) add(si sockInfo) { sc.addPacked(si.cookie, pack(si)) }

func (sc *sockCache) addPacked(cookie uint64, v uint32) {
	if len(sc.cur) >= sockCacheGen {
		sc.old, sc.cur = sc.cur, nil
	}
	if sc.cur == nil {
		sc.cur = make(map[uint64]uint32)
	}
	sc.cur[cookie] = v
}

// get returns what is known of the socket with this cookie.
func (sc *sockCache) get(cookie uint64) (sockInfo, bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	v, ok := sc.cur[cookie]
	if !ok {
		if v, ok = sc.old[cookie]; ok {
			delete(sc.old, cookie)
			sc.addPacked(cookie, v)
		}
	}
	if !ok {
		return sockInfo{}, false
	}
	return sockInfo{domain: int(v >> 24), typ: int(v >> 16 & 0xff), proto: int(v & 0xffff), cookie: cookie, sandbox: true}, true
}

// pack is what sockCache keeps of si: family (AF_INET, AF_INET6), type (SOCK_STREAM,
// SOCK_DGRAM) and protocol (TCP, UDP) in 8, 8 and 16 bits; every entry is of the sandbox.
func pack(si sockInfo) uint32 {
	return uint32(si.domain)<<24 | uint32(si.typ&0xff)<<16 | uint32(si.proto&0xffff)
}

// madeSockInfo is what a socket made in the sandbox by socket(domain, typ, proto) is, for the
// combinations whose protocol is documented; ok false for the others.
func madeSockInfo(domain, typ, proto int) (sockInfo, bool) {
	if domain != unix.AF_INET && domain != unix.AF_INET6 {
		return sockInfo{}, false
	}
	si := sockInfo{domain: domain, typ: typ & sockTypeMask, sandbox: true}
	switch {
	case si.typ == unix.SOCK_STREAM && (proto == 0 || proto == unix.IPPROTO_TCP):
		si.proto = unix.IPPROTO_TCP
	case si.typ == unix.SOCK_DGRAM && (proto == 0 || proto == unix.IPPROTO_UDP):
		si.proto = unix.IPPROTO_UDP
	default:
		return sockInfo{}, false
	}
	return si, true
}
