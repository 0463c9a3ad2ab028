package supervisor

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"
)

// The program's struct msghdr and its control messages, in the layout of its ABI (ptrSize 8:
// x86_64 and aarch64; 4: i386, the kernel's compat layout). Everything here is pure, so it is
// tested and fuzzed without a kernel (recv_test.go).

// recvHdr is a struct msghdr of the program, read once.
type recvHdr struct {
	addr       uint64 // where it is in the program's memory
	name       uint64
	namelen    int         // as the kernel takes it: 0 without a name, at most 128
	iov        [][2]uint64 // base, len
	total      uint64      // sum of the iovec lengths, clamped as the kernel clamps it
	control    uint64
	controllen uint64
}

// maxRWCount is the kernel's MAX_RW_COUNT (INT_MAX rounded down to a page): one call moves at
// most that many bytes.
const maxRWCount = 0x7ffff000

// msghdrSize is sizeof(struct msghdr) in the ABI.
func msghdrSize(ps int) uint64 {
	if ps == 4 {
		return 28
	}
	return 56
}

// mmsghdrSize is sizeof(struct mmsghdr): a msghdr and msg_len, padded to a pointer.
func mmsghdrSize(ps int) uint64 {
	if ps == 4 {
		return 32
	}
	return 64
}

// Offsets of the fields of struct msghdr the kernel writes back.
func offNamelen(ps int) uint64    { return uint64(ps) }
func offControllen(ps int) uint64 { return 5 * uint64(ps) }
func offMsgFlags(ps int) uint64   { return 6 * uint64(ps) }
func offMsgLen(ps int) uint64     { return msghdrSize(ps) }

// parseRecvHdr reads the struct msghdr at addr and its iovec array through read, checking what
// the kernel checks (copy_msghdr_from_user, import_iovec): a negative name length is EINVAL and a
// longer one is clamped to sockaddr_storage; more than UIO_MAXIOV iovecs is EMSGSIZE; an iovec
// longer than the ABI's ssize_t is EINVAL.
func parseRecvHdr(read memReader, ps int, addr uint64) (recvHdr, error) {
	h := recvHdr{addr: addr}
	b, err := read(addr, int(msghdrSize(ps)))
	if err != nil {
		return h, err
	}
	word := func(b []byte) uint64 {
		if ps == 4 {
			return uint64(binary.LittleEndian.Uint32(b))
		}
		return binary.LittleEndian.Uint64(b)
	}
	p := uint64(ps)
	h.name = word(b[0:])
	namelen := int32(binary.LittleEndian.Uint32(b[p:]))
	iov := word(b[2*p:])
	iovlen := word(b[3*p:])
	h.control = word(b[4*p:])
	h.controllen = word(b[5*p:])
	if h.name != 0 {
		if namelen < 0 {
			return h, unix.EINVAL
		}
		h.namelen = int(min(namelen, maxSockaddrLen))
	}
	if iovlen > 1024 {
		return h, unix.EMSGSIZE
	}
	maxLen := uint64(1<<63 - 1)
	if ps == 4 {
		maxLen = 1<<31 - 1
	}
	if iovlen > 0 {
		ib, err := read(iov, int(iovlen*2*p))
		if err != nil {
			return h, err
		}
		for i := uint64(0); i < iovlen; i++ {
			base, n := word(ib[2*p*i:]), word(ib[2*p*i+p:])
			if n > maxLen {
				return h, unix.EINVAL
			}
			if n > maxRWCount-h.total {
				n = maxRWCount - h.total
			}
			h.total += n
			h.iov = append(h.iov, [2]uint64{base, n})
		}
	}
	return h, nil
}

// cmsg is one control message: level, type and data (in the supervisor's native layout when it
// comes from the kernel).
type cmsg struct {
	level, typ int32
	data       []byte
}

// Control message types of SOL_SOCKET that need more than copying.
const (
	scmRights          = 1  // SCM_RIGHTS: descriptors
	scmPidfd           = 4  // SCM_PIDFD: a pidfd of the sender (Linux 6.5)
	soTimestampOld     = 29 // SO_TIMESTAMP_OLD: struct timeval (long, long)
	soTimestampNSOld   = 35 // SO_TIMESTAMPNS_OLD: struct timespec (long, long)
	soTimestampingOld  = 37 // SO_TIMESTAMPING_OLD: three struct timespec
	cmsgHdrNative      = 16
	cmsgHdrCompat      = 12
	maxFdsPerMessage   = 253 // SCM_MAX_FD
	errCmsgMalformed   = cmsgError("malformed control message")
	errCmsgTooManyFds  = cmsgError("more descriptors than a message can carry")
	errCmsgOddFdsCount = cmsgError("SCM_RIGHTS data is not a whole number of descriptors")
)

type cmsgError string

func (e cmsgError) Error() string { return string(e) }

// cmsgLayout is the header size and alignment of struct cmsghdr in an ABI.
func cmsgLayout(ps int) (hdr, align int) {
	if ps == 4 {
		return cmsgHdrCompat, 4
	}
	return cmsgHdrNative, 8
}

func cmsgAlign(n, align int) int { return (n + align - 1) &^ (align - 1) }

// parseCmsgs splits a control buffer of the ABI with ptrSize ps into messages. It is used on
// what the kernel returned to the supervisor (ps 8), and by the tests on what buildControl made.
// SCM_RIGHTS and SCM_PIDFD data must be whole descriptors.
func parseCmsgs(b []byte, ps int) ([]cmsg, error) {
	hdr, align := cmsgLayout(ps)
	var out []cmsg
	for len(b) >= hdr {
		var l uint64
		if ps == 4 {
			l = uint64(binary.LittleEndian.Uint32(b))
		} else {
			l = binary.LittleEndian.Uint64(b)
		}
		if l < uint64(hdr) || l > uint64(len(b)) {
			return out, errCmsgMalformed
		}
		m := cmsg{
			level: int32(binary.LittleEndian.Uint32(b[hdr-8:])),
			typ:   int32(binary.LittleEndian.Uint32(b[hdr-4:])),
			data:  b[hdr:l],
		}
		if m.level == unix.SOL_SOCKET && (m.typ == scmRights || m.typ == scmPidfd) {
			if len(m.data)%4 != 0 {
				return out, errCmsgOddFdsCount
			}
			if len(m.data)/4 > maxFdsPerMessage {
				return out, errCmsgTooManyFds
			}
		}
		out = append(out, m)
		next := cmsgAlign(int(l), align)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return out, nil
}

// fds returns the descriptors of an SCM_RIGHTS or SCM_PIDFD message.
func (m cmsg) fds() []int {
	out := make([]int, len(m.data)/4)
	for i := range out {
		out[i] = int(int32(binary.LittleEndian.Uint32(m.data[4*i:])))
	}
	return out
}

func (m cmsg) carriesFds() bool {
	return m.level == unix.SOL_SOCKET && (m.typ == scmRights || m.typ == scmPidfd)
}

// compatData converts the data of a native control message to the i386 layout where the two
// differ (put_cmsg_compat): the old timestamps hold longs.
func compatData(m cmsg) []byte {
	if m.level != unix.SOL_SOCKET {
		return m.data
	}
	var pairs int
	switch m.typ {
	case soTimestampOld, soTimestampNSOld:
		pairs = 1
	case soTimestampingOld:
		pairs = 3
	default:
		return m.data
	}
	if len(m.data) != 16*pairs {
		return m.data
	}
	out := make([]byte, 8*pairs)
	for i := 0; i < 2*pairs; i++ {
		binary.LittleEndian.PutUint32(out[4*i:], uint32(binary.LittleEndian.Uint64(m.data[8*i:])))
	}
	return out
}

// errInstallStop: install could not place a descriptor (the program's table is full); the kernel
// stops installing there and the message is truncated.
var errInstallStop = errors.New("descriptor not installed")

// buildControl lays the control messages out for the program, as the kernel does for a control
// buffer of room bytes in the ABI with ptrSize ps (put_cmsg, scm_detach_fds, scm_pidfd_recv):
// messages are written while they fit; a message that does not fit whole is cut (MSG_CTRUNC); of
// SCM_RIGHTS only as many descriptors as fit are installed and the rest dropped (MSG_CTRUNC).
//
// install is called for each descriptor that is passed on, in order, and returns its number in
// the program; it returns errInstallStop to stop there (truncating), any other error to abort.
// install nil is a dry run that only says which descriptors would be installed (the result keeps
// the supervisor's numbers). It returns the bytes to write at the start of the control buffer,
// the controllen to report, whether the message was truncated, and the descriptors passed on.
func buildControl(msgs []cmsg, room uint64, ps int, install func(fd int) (int, error)) (out []byte, used uint64, ctrunc bool, passed []int, err error) {
	hdr, align := cmsgLayout(ps)
	h := uint64(hdr)
	put := func(level, typ int32, data []byte) {
		cmlen := h + uint64(len(data))
		if cmlen > room {
			ctrunc = true
			cmlen = room
		}
		b := make([]byte, hdr, cmlen)
		if ps == 4 {
			binary.LittleEndian.PutUint32(b, uint32(cmlen))
		} else {
			binary.LittleEndian.PutUint64(b, cmlen)
		}
		binary.LittleEndian.PutUint32(b[hdr-8:], uint32(level))
		binary.LittleEndian.PutUint32(b[hdr-4:], uint32(typ))
		b = append(b, data[:cmlen-h]...)
		// Where this message starts: the end of the previous one, aligned (the kernel leaves the
		// padding unwritten; zeros are written here).
		out = append(out, make([]byte, int(used)-len(out))...)
		out = append(out, b...)
		space := uint64(cmsgAlign(hdr+len(data), align))
		used += min(space, room)
		room -= min(space, room)
	}
	for _, m := range msgs {
		switch {
		case m.level == unix.SOL_SOCKET && m.typ == scmRights:
			fds := m.fds()
			if len(fds) == 0 {
				continue
			}
			fdmax := 0
			if room > h {
				fdmax = int((room - h) / 4)
			}
			k := min(fdmax, len(fds))
			nums := make([]byte, 0, 4*k)
			i := 0
			for ; i < k; i++ {
				n := fds[i]
				if install != nil {
					var ierr error
					if n, ierr = install(fds[i]); ierr == errInstallStop {
						break
					} else if ierr != nil {
						return nil, 0, false, passed, ierr
					}
				}
				passed = append(passed, fds[i])
				nums = binary.LittleEndian.AppendUint32(nums, uint32(n))
			}
			if i > 0 {
				put(m.level, m.typ, nums)
			}
			if i < len(fds) {
				ctrunc = true
			}
		case m.level == unix.SOL_SOCKET && m.typ == scmPidfd:
			fds := m.fds()
			if len(fds) != 1 {
				continue
			}
			if room < h+4 {
				ctrunc = true
				continue
			}
			n := fds[0]
			if install != nil {
				var ierr error
				if n, ierr = install(fds[0]); ierr == errInstallStop {
					ctrunc = true
					continue
				} else if ierr != nil {
					return nil, 0, false, passed, ierr
				}
			}
			passed = append(passed, fds[0])
			put(m.level, m.typ, binary.LittleEndian.AppendUint32(nil, uint32(n)))
		default:
			if room < h {
				ctrunc = true
				continue
			}
			data := m.data
			if ps == 4 {
				data = compatData(m)
			}
			put(m.level, m.typ, data)
		}
	}
	return out, used, ctrunc, passed, nil
}
