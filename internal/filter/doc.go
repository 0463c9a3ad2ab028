// Package filter builds the seccomp BPF program that decides, inside the kernel and for every
// syscall of the traced program, whether it runs unmediated, is refused, or is sent to the
// supervisor as a user notification. It also holds the syscall numbers of each ABI the supervisor
// must understand (abi_*.go).
//
// The program is small and only compares syscall numbers and register arguments: it never reads
// memory (BPF cannot), so everything that depends on a pointer argument is notified and decided by
// the supervisor on a copy of the program's socket.
package filter
