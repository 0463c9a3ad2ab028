package seccomp

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ReadMem reads len(buf) bytes at addr of thread tid. A short read is an error (EFAULT).
func ReadMem(tid int, addr uint64, buf []byte) error {
	if len(buf) > maxTraceeMemoryAccess {
		return fmt.Errorf("read %d bytes of pid %d: too large", len(buf), tid)
	}
	if len(buf) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &buf[0], Len: uint64(len(buf))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}
	n, err := unix.ProcessVMReadv(tid, local, remote, 0)
	if err != nil {
		return fmt.Errorf("read %d bytes at %#x of pid %d: %w", len(buf), addr, tid, err)
	}
	if n != len(buf) {
		return fmt.Errorf("read %d bytes at %#x of pid %d: short (%d): %w", len(buf), addr, tid, n, unix.EFAULT)
	}
	return nil
}

// Seg is one piece of a vectored write into the traced process: B goes to Addr.
type Seg struct {
	Addr uint64
	B    []byte
}

// WriteMemV writes every segment into thread tid's memory, in order, with as few
// process_vm_writev calls as IOV_MAX allows. A segment that does not fit (a bad address) is an
// error (EFAULT); what came before it is written. The caller must check the notification id just
// before.
func WriteMemV(tid int, segs []Seg) error {
	const iovMax = 1024
	var local []unix.Iovec
	var remote []unix.RemoteIovec
	want := 0
	flush := func() error {
		if len(local) == 0 {
			return nil
		}
		n, err := unix.ProcessVMWritev(tid, local, remote, 0)
		if err != nil {
			return fmt.Errorf("write %d bytes in %d pieces to pid %d: %w", want, len(local), tid, err)
		}
		if n != want {
			return fmt.Errorf("write %d bytes in %d pieces to pid %d: short (%d): %w", want, len(local), tid, n, unix.EFAULT)
		}
		local, remote, want = local[:0], remote[:0], 0
		return nil
	}
	for _, s := range segs {
		if len(s.B) == 0 {
			continue
		}
		if s.Addr == 0 {
			if err := flush(); err != nil {
				return err
			}
			return unix.EFAULT
		}
		local = append(local, unix.Iovec{Base: &s.B[0], Len: uint64(len(s.B))})
		remote = append(remote, unix.RemoteIovec{Base: uintptr(s.Addr), Len: len(s.B)})
		want += len(s.B)
		if len(local) == iovMax {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}
