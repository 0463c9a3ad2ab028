package launch

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// DroppedCapabilities are the capabilities a program loses under torsocks (unless
// KeepCapabilities): with them a root program could give itself a way out that no system call
// the filter sees would show (a TUN device, a route, a firewall rule, a kernel module, a BPF
// program, raw packets, another network namespace through setns) or take over the supervisor
// (ptrace, /dev/mem).
var DroppedCapabilities = []struct {
	Cap  int
	Name string
}{
	{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"},
	{unix.CAP_NET_RAW, "CAP_NET_RAW"},
	{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
	{unix.CAP_SYS_MODULE, "CAP_SYS_MODULE"},
	{unix.CAP_SYS_PTRACE, "CAP_SYS_PTRACE"},
	{unix.CAP_BPF, "CAP_BPF"},
	{unix.CAP_SYS_RAWIO, "CAP_SYS_RAWIO"},
}

// dropCapabilities removes DroppedCapabilities from the calling thread's bounding, effective,
// permitted, inheritable and ambient sets. Capabilities are per thread: Start runs this on the
// locked OS thread that then starts the program, so the program starts with exactly these sets (an
// execve by root recomputes permitted from inheritable and bounding, both cleared here). The
// bounding set needs CAP_SETPCAP to change; a caller without it (any non-root user) cannot
// regain a capability it does not hold anyway, because the program runs with no_new_privs.
func dropCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	setpcap := data[0].Effective&(1<<unix.CAP_SETPCAP) != 0
	for _, c := range DroppedCapabilities {
		if setpcap {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c.Cap), 0, 0, 0); err != nil && err != unix.EINVAL {
				return fmt.Errorf("drop %s from the bounding set: %w", c.Name, err)
			}
		}
		// EINVAL: a kernel that does not know the capability (CAP_BPF before 5.8).
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_LOWER, uintptr(c.Cap), 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop %s from the ambient set: %w", c.Name, err)
		}
		bit := uint32(1) << (c.Cap % 32)
		d := &data[c.Cap/32]
		d.Effective &^= bit
		d.Permitted &^= bit
		d.Inheritable &^= bit
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}
