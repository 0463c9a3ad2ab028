/* inh_uring FD PROGRAM [ARG...]: make an io_uring instance with IORING_SETUP_SQPOLL (raw
 * io_uring_setup, no liburing), put it at descriptor FD without close-on-exec and exec PROGRAM,
 * which inherits the ring. With SQPOLL a kernel thread takes submissions (IORING_OP_SOCKET,
 * IORING_OP_CONNECT) from shared memory, with no system call a seccomp filter could see.
 * Exits 3 when the kernel will not make the ring. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define IORING_SETUP_SQPOLL 2

int main(int argc, char **argv)
{
	unsigned char params[120]; /* struct io_uring_params; flags at offset 8 */
	unsigned int flags = IORING_SETUP_SQPOLL;
	if (argc < 3)
		return 2;
	int want = atoi(argv[1]);
	memset(params, 0, sizeof params);
	memcpy(params + 8, &flags, sizeof flags);
	long fd = syscall(425, 4, params);
	if (fd < 0) {
		printf("io_uring_setup: %s\n", strerror(errno));
		return 3;
	}
	if (fd != want) {
		if (dup2((int)fd, want) < 0) { /* dup2 leaves close-on-exec off */
			perror("dup2");
			return 2;
		}
		close((int)fd);
	}
	execv(argv[2], argv + 2);
	perror("execv");
	return 2;
}
