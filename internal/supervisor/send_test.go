package supervisor

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeMem is a program's memory for parseSend: bytes mapped at base, everything else unmapped.
type fakeMem struct {
	base uint64
	b    []byte
}

func (m fakeMem) read(addr uint64, n int) ([]byte, error) {
	if n < 0 || addr < m.base || addr-m.base > uint64(len(m.b)) || uint64(n) > uint64(len(m.b))-(addr-m.base) {
		return nil, unix.EFAULT
	}
	off := addr - m.base
	return append([]byte(nil), m.b[off:off+uint64(n)]...), nil
}

func TestParseSendMsghdr(t *testing.T) {
	// A 64-bit sendmsg: msghdr at 0x1000 naming 203.0.113.10:53, two iovecs "ab" + "cde".
	mem := fakeMem{base: 0x1000, b: make([]byte, 0x200)}
	put := func(off int, v uint64) { binary.LittleEndian.PutUint64(mem.b[off:], v) }
	sa := sockaddrBytes(unix.AF_INET, mustAddrPort("203.0.113.10:53"))
	copy(mem.b[0x100:], sa)
	copy(mem.b[0x180:], "abcde")
	put(0, 0x1100)          // msg_name
	put(8, uint64(len(sa))) // msg_namelen
	put(16, 0x1040)         // msg_iov
	put(24, 2)              // msg_iovlen
	put(0x40, 0x1180)       // iov[0].base
	put(0x48, 2)            // iov[0].len
	put(0x50, 0x1182)       // iov[1].base
	put(0x58, 3)            // iov[1].len
	m, err := parseSend(mem.read, 8, sendArgs{kind: kindSendmsg, msg: 0x1000}, 4)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.data) != "abcd" || m.total != 5 || len(m.name) != len(sa) {
		t.Errorf("got data %q total %d name %d bytes; want \"abcd\" 5 %d", m.data, m.total, len(m.name), len(sa))
	}
	// An iovec longer than ssize_t allows: EINVAL, as the kernel answers.
	put(0x58, 1<<63)
	if _, err := parseSend(mem.read, 8, sendArgs{kind: kindSendmsg, msg: 0x1000}, 4); err != unix.EINVAL {
		t.Errorf("huge iov_len: %v, want EINVAL", err)
	}
	// sendto's length is clamped, not refused.
	if m, err := parseSend(mem.read, 8, sendArgs{kind: kindSendto, buf: 0x1180, len: 1<<64 - 1}, 3); err != nil || string(m.data) != "abc" {
		t.Errorf("sendto with a huge length: %q %v", m.data, err)
	}
	// Unmapped msghdr.
	if _, err := parseSend(mem.read, 8, sendArgs{kind: kindSendmsg, msg: 0x9000}, 4); err != unix.EFAULT {
		t.Errorf("unmapped msghdr: %v, want EFAULT", err)
	}
}

// FuzzParseSend feeds arbitrary program memory and arguments to the send-family parser: it must
// never panic, never return more data than the limit or than the program asked for, and never a
// name longer than a sockaddr.
func FuzzParseSend(f *testing.F) {
	f.Add(uint8(1), true, uint64(0x1000), uint64(0), uint64(0), uint64(0), uint64(0), make([]byte, 128))
	f.Add(uint8(0), false, uint64(0), uint64(0x1000), uint64(16), uint64(0x1010), uint64(8), make([]byte, 64))
	f.Add(uint8(2), true, uint64(0x1000), uint64(0), uint64(0), uint64(0), uint64(1), []byte("\x00\x10\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, kind uint8, wide bool, msg, buf, length, name, namelen uint64, mem []byte) {
		ps := 4
		if wide {
			ps = 8
		}
		a := sendArgs{kind: sendKind(kind % 3), msg: msg, vlen: 1, buf: buf, len: length, name: name, namelen: namelen}
		const limit = 256
		m, err := parseSend(fakeMem{base: 0x1000, b: mem}.read, ps, a, limit)
		if err != nil {
			return
		}
		if len(m.data) > limit {
			t.Fatalf("%d bytes of data, limit %d", len(m.data), limit)
		}
		if uint64(len(m.data)) > m.total {
			t.Fatalf("%d bytes of data, the program asked for %d", len(m.data), m.total)
		}
		if len(m.name) > maxSockaddrLen {
			t.Fatalf("a %d-byte name", len(m.name))
		}
	})
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
