// Package seccomp is the kernel interface of the supervisor: loading a seccomp filter with a user
// notification listener, receiving and answering notifications, checking that a notification is
// still valid, installing file descriptors into the traced process, opening pidfds for traced
// threads, and reading and writing traced memory.
//
// Nothing here decides policy; the supervisor package does. Every function is a thin, documented
// wrapper over one kernel operation, with errors wrapped in context.
package seccomp
