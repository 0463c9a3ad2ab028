package supervisor

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/filter"
)

// maxSockoptLen bounds an option value read from the program (the allowed options are far
// smaller; the kernel's own limit is per option).
const maxSockoptLen = 4096

// setsockopt serves a setsockopt the filter did not allow by itself. Options off the allowlist
// (filter/sockopt.go: those that could change where a connection's packets go) are refused. The
// i386 socketcall form has its arguments in memory, where a racing thread could rewrite them
// between a check and the kernel's own read, so an allowed option is carried out here, on the
// supervisor's copy of the socket, with the value read once.
func (s *Supervisor) setsockopt(c *call, fd, level, name int, val, vlen uint64, viaMemory bool) (reply, error) {
	if filter.SockoptNotTCP(level, name) {
		return s.socketFilter(c, fd, name, val, vlen)
	}
	if !filter.SockoptAllowed(level, name) {
		return reply{}, refused(unix.EPERM, fmt.Sprintf("setsockopt %s refused: not one of the socket options that cannot change where a connection goes", filter.SockoptName(level, name)))
	}
	if !viaMemory {
		return reply{}, refused(unix.EPERM, fmt.Sprintf("setsockopt %s refused: internal filter mismatch", filter.SockoptName(level, name)))
	}
	if vlen > maxSockoptLen {
		return reply{}, failed(unix.EINVAL)
	}
	b, err := c.read(val, int(vlen))
	if err != nil {
		return reply{}, fromErr("setsockopt", err)
	}
	b, ok := compatSockopt(level, name, b)
	if !ok {
		return reply{}, refused(unix.EPERM, fmt.Sprintf("setsockopt %s refused: its 32-bit layout is not converted on the i386 socketcall path (the setsockopt system call works)", filter.SockoptName(level, name)))
	}
	cp, err := c.getfd(fd)
	if err != nil {
		return reply{}, fromErr("setsockopt", err)
	}
	defer unix.Close(cp)
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(cp), uintptr(level), uintptr(name), uintptr(p), uintptr(len(b)), 0)
	if errno != 0 {
		return reply{}, failed(errno)
	}
	return value(0), nil
}

// compatSockopt turns an i386 option value into this process' layout, or says it cannot. Most
// allowed options are ints or structs laid out alike in both ABIs; the old timeouts are a 32-bit
// struct timeval; a reuseport filter holds a pointer into the program (socket filters are
// socketFilter's) and the MCAST_* group requests
// are packed differently: those are not carried out this way.
func compatSockopt(level, name int, b []byte) ([]byte, bool) {
	switch {
	case level == unix.SOL_SOCKET && (name == unix.SO_RCVTIMEO || name == unix.SO_SNDTIMEO):
		if len(b) < 8 {
			return b, true // the kernel answers EINVAL
		}
		tv := unix.Timeval{Sec: int64(int32(binary.LittleEndian.Uint32(b))), Usec: int64(int32(binary.LittleEndian.Uint32(b[4:])))}
		return unsafe.Slice((*byte)(unsafe.Pointer(&tv)), unsafe.Sizeof(tv)), true
	case level == unix.SOL_SOCKET && name == unix.SO_ATTACH_REUSEPORT_CBPF:
		return nil, false
	case (level == unix.IPPROTO_IP || level == unix.IPPROTO_IPV6) && name >= unix.MCAST_JOIN_GROUP && name <= unix.MCAST_MSFILTER:
		return nil, false
	}
	return b, true
}

// socketFilter serves SO_ATTACH_FILTER and SO_ATTACH_BPF: refused on TCP sockets (a filter that
// drops the SYN-ACK would hold the supervisor's connect of the socket for minutes), carried out
// on the supervisor's copy of any other socket (udev monitors filter their netlink socket), with
// the filter read once from the program's memory (classic BPF: struct sock_fprog, laid out per
// the caller's ABI) or the program's BPF program descriptor copied.
func (s *Supervisor) socketFilter(c *call, fd, name int, val, vlen uint64) (reply, error) {
	cp, si, err := c.sock(fd)
	if err != nil {
		return reply{}, fromErr("setsockopt", err)
	}
	defer unix.Close(cp)
	if si.isInet() && si.typ == unix.SOCK_STREAM {
		return reply{}, refused(unix.EPERM, fmt.Sprintf("setsockopt %s refused on a TCP socket (other sockets may have one)", filter.SockoptName(unix.SOL_SOCKET, name)))
	}
	if name == unix.SO_ATTACH_BPF {
		if vlen < 4 {
			return reply{}, failed(unix.EINVAL)
		}
		b, err := c.read(val, 4)
		if err != nil {
			return reply{}, fromErr("setsockopt", err)
		}
		prog, err := c.getfd(int(int32(binary.LittleEndian.Uint32(b))))
		if err != nil {
			return reply{}, fromErr("setsockopt", err)
		}
		defer unix.Close(prog)
		return sockoptResult(unix.SetsockoptInt(cp, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, prog))
	}
	// struct sock_fprog: a u16 count, then (aligned) a pointer to count 8-byte instructions.
	ps := c.abi.PtrSize
	if vlen < uint64(2*ps) {
		return reply{}, failed(unix.EINVAL)
	}
	b, err := c.read(val, 2*ps)
	if err != nil {
		return reply{}, fromErr("setsockopt", err)
	}
	n := int(binary.LittleEndian.Uint16(b))
	ptr := uint64(binary.LittleEndian.Uint32(b[ps:]))
	if ps == 8 {
		ptr = binary.LittleEndian.Uint64(b[8:])
	}
	if n == 0 || n > 4096 { // BPF_MAXINSNS
		return reply{}, failed(unix.EINVAL)
	}
	ins, err := c.read(ptr, 8*n)
	if err != nil {
		return reply{}, fromErr("setsockopt", err)
	}
	prog := make([]unix.SockFilter, n)
	for i := range prog {
		f := ins[8*i:]
		prog[i] = unix.SockFilter{Code: binary.LittleEndian.Uint16(f), Jt: f[2], Jf: f[3], K: binary.LittleEndian.Uint32(f[4:])}
	}
	return sockoptResult(unix.SetsockoptSockFprog(cp, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(n), Filter: &prog[0]}))
}

func sockoptResult(err error) (reply, error) {
	if err != nil {
		return reply{}, failed(err)
	}
	return value(0), nil
}
