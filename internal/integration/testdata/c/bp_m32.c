/* bp_m32 IP PORT: a 32-bit program (built by the tests with gcc -m32 -static, and exec'd by the
 * 64-bit dynamic bp_execstatic), so every network call enters the kernel through the i386 ABI:
 *   - glibc's connect (the i386 connect syscall, or socketcall on old kernels);
 *   - connect through socketcall(SYS_CONNECT) explicitly;
 *   - sendto with MSG_FASTOPEN through socketcall(SYS_SENDTO);
 *   - UDP sockets through socket() and socketcall(SYS_SOCKET): EPERM.
 * Expected under torsocks: the TCP connects carried through the SOCKS server, page received,
 * getpeername showing IP:PORT. */
#include "bp_common.c"
#include <sys/syscall.h>

#ifndef __i386__
#error "bp_m32 is built with -m32"
#endif

static struct sockaddr_storage dest;
static socklen_t dlen;

static void got_page(const char *what, int fd)
{
	char seen[80];
	int body = http_get(fd);
	int peer = peer_ok(fd, &dest, seen, sizeof seen);
	check(body && peer, "%s=0 body=%s peer=%s", what, body ? "canary" : "missing", seen);
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	bounded(30);
	dlen = parse_dest(argv[1], argv[2], &dest);

	int fd = socket(dest.ss_family, SOCK_STREAM, 0);
	int r = connect(fd, (struct sockaddr *)&dest, dlen);
	if (r == 0)
		got_page("m32-connect", fd);
	else
		check(0, "m32-connect=%d errno=%s", r, errname(errno));
	close(fd);

	fd = socket(dest.ss_family, SOCK_STREAM, 0);
	unsigned long a[6] = {fd, (unsigned long)&dest, dlen};
	long s = syscall(SYS_socketcall, 3 /* SYS_CONNECT */, a);
	if (s == 0)
		got_page("m32-socketcall-connect", fd);
	else
		check(0, "m32-socketcall-connect=%ld errno=%s", s, errname(errno));
	close(fd);

	fd = socket(dest.ss_family, SOCK_STREAM, 0);
	unsigned long b[6] = {fd, (unsigned long)http_req, sizeof http_req - 1, MSG_FASTOPEN, (unsigned long)&dest, dlen};
	s = syscall(SYS_socketcall, 11 /* SYS_SENDTO */, b);
	if (s == (long)(sizeof http_req - 1)) {
		char buf[4096], seen[80];
		int body = read_reply(fd, buf, sizeof buf);
		int peer = peer_ok(fd, &dest, seen, sizeof seen);
		check(body && peer, "m32-socketcall-sendto-fastopen=%ld body=%s peer=%s", s, body ? "canary" : "missing", seen);
	} else {
		check(0, "m32-socketcall-sendto-fastopen=%ld errno=%s", s, errname(errno));
	}
	close(fd);

	fd = socket(dest.ss_family, SOCK_DGRAM, 0);
	check(fd >= 0 && sandboxed(fd), "m32-socket-udp=%d errno=%s sandboxed", fd, fd < 0 ? errname(errno) : "0");
	unsigned long c[3] = {dest.ss_family, SOCK_DGRAM, 0};
	s = syscall(SYS_socketcall, 1 /* SYS_SOCKET */, c);
	check(s >= 0 && sandboxed(s), "m32-socketcall-socket-udp=%ld errno=%s sandboxed", s, s < 0 ? errname(errno) : "0");
	return failures ? 1 : 0;
}
