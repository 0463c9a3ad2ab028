// kernel_older MODE COMMAND...: runs COMMAND behind a seccomp filter that makes this kernel look
// older, the way the tests emulate kernels users still run.
//   nolandlock   landlock_create_ruleset/add_rule/restrict_self answer ENOSYS (no Landlock)
//   landlock3    Landlock without network rules (ABI 3, Linux 6.1-6.6): a ruleset attribute of
//                16 bytes (the one with handled_access_net) answers E2BIG, as such a kernel does
//   nonotify     no seccomp user notification (Linux before 5.0): SECCOMP_GET_NOTIF_SIZES answers
//                EINVAL
//   nosandbox    no new network or user namespace (user namespaces disabled, or Ubuntu 24.04's
//                AppArmor policy for a normal user): clone and unshare with CLONE_NEWUSER or
//                CLONE_NEWNET answer EPERM; clone3, whose flags are in memory, answers ENOSYS
//                (glibc and Go then use clone)
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NR_CREATE 444
#define NR_ADD 445
#define NR_RESTRICT 446
#define ARG1_LO offsetof(struct seccomp_data, args[1])
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#define NS_FLAGS 0x50000000 /* CLONE_NEWUSER | CLONE_NEWNET */

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: kernel_older nolandlock|landlock3|nonotify|nosandbox COMMAND...\n");
		return 2;
	}
	struct sock_filter nolandlock[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, NR_CREATE, 0, 2),
		BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, NR_RESTRICT, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_filter landlock3[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_CREATE, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG1_LO),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 16, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | E2BIG),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_filter nonotify[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_seccomp, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_GET_NOTIF_SIZES, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	// clone's flags are its first argument on x86_64 and i386 (not on s390x, not built here).
	struct sock_filter nosandbox[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 1, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_unshare, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, NS_FLAGS, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog;
	if (strcmp(argv[1], "nolandlock") == 0) {
		prog.len = sizeof nolandlock / sizeof nolandlock[0];
		prog.filter = nolandlock;
	} else if (strcmp(argv[1], "landlock3") == 0) {
		prog.len = sizeof landlock3 / sizeof landlock3[0];
		prog.filter = landlock3;
	} else if (strcmp(argv[1], "nonotify") == 0) {
		prog.len = sizeof nonotify / sizeof nonotify[0];
		prog.filter = nonotify;
	} else if (strcmp(argv[1], "nosandbox") == 0) {
		prog.len = sizeof nosandbox / sizeof nosandbox[0];
		prog.filter = nosandbox;
	} else {
		fprintf(stderr, "kernel_older: unknown mode %s\n", argv[1]);
		return 2;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
		perror("kernel_older: seccomp");
		return 2;
	}
	execvp(argv[2], argv + 2);
	perror("kernel_older: exec");
	return 127;
}
