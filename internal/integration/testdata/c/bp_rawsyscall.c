/* bp_rawsyscall IP PORT: socket, connect, send, recv and getpeername made with syscall(2), not
 * through libc's wrappers (what a program bypassing an LD_PRELOAD torsocks does). Expected under
 * torsocks: the connect is carried through the SOCKS server and getpeername shows the destination. */
#include "bp_common.c"
#include <sys/syscall.h>

int main(int argc, char **argv)
{
	struct sockaddr_storage dest, peer;
	char buf[4096], seen[80], want[80];
	if (argc != 3)
		return 2;
	bounded(30);
	socklen_t len = parse_dest(argv[1], argv[2], &dest);
	long fd = syscall(SYS_socket, dest.ss_family, SOCK_STREAM, 0);
	if (fd < 0) {
		check(0, "socket=-1 errno=%s", errname(errno));
		return 1;
	}
	long r = syscall(SYS_connect, fd, &dest, len);
	check(r == 0, "connect=%ld errno=%s", r, r ? errname(errno) : "0");
	if (r != 0)
		return 1;
	r = syscall(SYS_sendto, fd, http_req, sizeof http_req - 1, MSG_NOSIGNAL, NULL, 0);
	check(r == sizeof http_req - 1, "sendto=%ld", r);
	size_t got = 0;
	set_timeouts(fd, 10);
	for (;;) {
		r = syscall(SYS_recvfrom, fd, buf + got, sizeof buf - 1 - got, 0, NULL, NULL);
		if (r <= 0)
			break;
		got += r;
	}
	buf[got] = 0;
	check(strstr(buf, "canary") != NULL, "body=%s", strstr(buf, "canary") ? "canary" : "missing");
	socklen_t plen = sizeof peer;
	memset(&peer, 0, sizeof peer);
	r = syscall(SYS_getpeername, fd, &peer, &plen);
	fmt_addr((struct sockaddr *)&peer, seen, sizeof seen);
	fmt_addr((struct sockaddr *)&dest, want, sizeof want);
	check(r == 0 && strcmp(seen, want) == 0 && plen == len, "getpeername=%ld peer=%s len=%u", r, seen, (unsigned)plen);
	return failures ? 1 : 0;
}
