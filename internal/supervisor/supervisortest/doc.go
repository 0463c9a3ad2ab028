// Package supervisortest holds test doubles for the supervisor's seam (supervisor.Kernel and
// supervisor.Tracee): a fake seccomp listener that checks every notification is answered once,
// and a fake traced program whose descriptors are the test's own and whose memory is a byte
// slice. With them the supervisor's worker loop runs in-process, without root.
package supervisortest
