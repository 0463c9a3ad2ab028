/* bp_x32 IP PORT: socket and connect with x32 system call numbers (bit 0x40000000), which the
 * kernel labels as x86_64 in seccomp data. Expected under torsocks: ENOSYS for both, and the
 * destination never reached. */
#include "bp_common.c"
#include <sys/syscall.h>

#ifndef __X32_SYSCALL_BIT
#define __X32_SYSCALL_BIT 0x40000000
#endif

int main(int argc, char **argv)
{
	struct sockaddr_storage dest;
	if (argc != 3)
		return 2;
	bounded(30);
	socklen_t len = parse_dest(argv[1], argv[2], &dest);
	/* x32 socket (41) and connect (42) share the x86_64 numbers. */
	long r = syscall(__X32_SYSCALL_BIT | SYS_socket, dest.ss_family, SOCK_STREAM, 0);
	check(r == -1 && errno == ENOSYS, "x32-socket=%ld errno=%s", r, r < 0 ? errname(errno) : "0");
	int fd = socket(dest.ss_family, SOCK_STREAM, 0);
	if (fd < 0) {
		check(0, "socket=-1 errno=%s", errname(errno));
		return 1;
	}
	r = syscall(__X32_SYSCALL_BIT | SYS_connect, fd, &dest, len);
	check(r == -1 && errno == ENOSYS, "x32-connect=%ld errno=%s", r, r < 0 ? errname(errno) : "0");
	/* x32 sendto (44) with MSG_FASTOPEN: another connect in disguise. */
	r = syscall(__X32_SYSCALL_BIT | SYS_sendto, fd, http_req, sizeof http_req - 1, MSG_FASTOPEN, &dest, len);
	check(r == -1 && errno == ENOSYS, "x32-sendto-fastopen=%ld errno=%s", r, r < 0 ? errname(errno) : "0");
	/* The socket must still be unconnected. */
	struct sockaddr_storage p;
	socklen_t plen = sizeof p;
	r = getpeername(fd, (struct sockaddr *)&p, &plen);
	check(r == -1 && errno == ENOTCONN, "getpeername=%ld errno=%s", r, r < 0 ? errname(errno) : "0");
	return failures ? 1 : 0;
}
