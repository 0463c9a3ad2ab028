/* bp_iouring IP PORT: io_uring_setup, _enter and _register (raw numbers 425-427, no liburing).
 * IORING_OP_CONNECT would connect without any connect() system call, so under torsocks all three
 * must fail with ENOSYS. Run without torsocks (argument "native") it reports what the kernel does. */
#include "bp_common.c"
#include <sys/syscall.h>

int main(int argc, char **argv)
{
	unsigned char params[120]; /* struct io_uring_params */
	if (argc < 3)
		return 2;
	bounded(30);
	memset(params, 0, sizeof params);
	long r = syscall(425, 8, params);
	if (argc > 3 && strcmp(argv[3], "native") == 0) {
		printf("NATIVE io_uring_setup=%ld errno=%s\n", r, r < 0 ? errname(errno) : "0");
		return 0;
	}
	check(r == -1 && errno == ENOSYS, "io_uring_setup=%ld errno=%s", r, r < 0 ? errname(errno) : "0");
	r = syscall(426, 0, 1, 0, 0, NULL, 0);
	check(r == -1 && errno == ENOSYS, "io_uring_enter=%ld errno=%s", r, r < 0 ? errname(errno) : "0");
	r = syscall(427, 0, 0, NULL, 0);
	check(r == -1 && errno == ENOSYS, "io_uring_register=%ld errno=%s", r, r < 0 ? errname(errno) : "0");
	return failures ? 1 : 0;
}
