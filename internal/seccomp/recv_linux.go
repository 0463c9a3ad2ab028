package seccomp

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// AddFD installs srcfd in the traced process (O_CLOEXEC if cloexec) without answering the call,
// and returns the descriptor number it got there. The caller answers later (an emulated recvmsg
// writes the numbers into the program's control buffer first). Like AddFDAndReturn it never uses
// SECCOMP_ADDFD_FLAG_SEND; an interrupted ADDFD either completed or was withdrawn.
func (l *Listener) AddFD(id uint64, srcfd int, cloexec bool) (int, error) {
	a := addFD{ID: id, SrcFD: uint32(srcfd)}
	if cloexec {
		a.NewFDFlags = unix.O_CLOEXEC
	}
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(l.fd), ioctlNotifAddFD, uintptr(unsafe.Pointer(&a)))
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		case unix.ENOENT:
			return -1, ErrNotifGone
		case unix.EMFILE, unix.ENFILE:
			return -1, errno // the program's descriptor table is full: the kernel would stop there too
		default:
			return -1, fmt.Errorf("SECCOMP_IOCTL_NOTIF_ADDFD: %w", errno)
		}
	}
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
