/* bp_int80 IP PORT: a 64-bit program entering the kernel through int $0x80, the i386 ABI, with
 * i386 numbers: connect (362), socketcall (102) CONNECT/SOCKET/SENDTO, socket (359) and
 * getpeername (368). Built -no-pie -static so that its static data (every pointer passed here) lies
 * below 4 GiB, where 32-bit pointers reach it. Expected under torsocks: TCP connects carried through
 * the SOCKS server (or refused), never direct; UDP sockets refused with EPERM. */
#include "bp_common.c"
#include <stdint.h>

static struct sockaddr_storage sdest, speer;
static uint32_t splen;
static uint32_t args[6];
static char sreq[] = "GET / HTTP/1.0\r\n\r\n";

static long int80(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(nr), "b"(a), "c"(b), "d"(c)
			 : "memory", "r8", "r9", "r10", "r11");
	return ret;
}

static uint32_t low(const void *p)
{
	uintptr_t v = (uintptr_t)p;
	if (v > 0xffffffffu) {
		printf("SKIP static data at %p is above 4 GiB (build with -no-pie -static)\n", p);
		exit(3);
	}
	return (uint32_t)v;
}

static const char *res(long r) { return r < 0 ? errname(-r) : "0"; }

/* outcome names what a connect did: proxied (the canary answered through it) or refused. */
static int proxied_or_refused(const char *what, long r, int fd)
{
	char seen[80];
	if (r == 0) {
		int body = http_get(fd);
		/* getpeername through the i386 ABI too. */
		splen = sizeof speer;
		memset(&speer, 0, sizeof speer);
		long g = int80(368, fd, low(&speer), low(&splen));
		fmt_addr((struct sockaddr *)&speer, seen, sizeof seen);
		char want[80];
		fmt_addr((struct sockaddr *)&sdest, want, sizeof want);
		check(body && g == 0 && strcmp(seen, want) == 0, "%s=0 outcome=proxied body=%s getpeername=%s peer=%s",
		      what, body ? "canary" : "missing", res(g), seen);
		return 1;
	}
	check(r == -EPERM || r == -ENOSYS || r == -EACCES, "%s=-1 errno=%s outcome=refused", what, res(r));
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	bounded(40);
	socklen_t len = parse_dest(argv[1], argv[2], &sdest);
	int fam = sdest.ss_family;

	/* i386 connect (362) on a socket made by the ordinary 64-bit socket(). */
	int fd = socket(fam, SOCK_STREAM, 0);
	long r = int80(362, fd, low(&sdest), len);
	int was = proxied_or_refused("i386-connect", r, fd);
	if (was) {
		r = int80(362, fd, low(&sdest), len);
		check(r == -EISCONN, "i386-connect-again=%ld errno=%s", r, res(r));
	}
	close(fd);

	/* socketcall(SYS_CONNECT, args) on a socket made by the ordinary socket(). */
	fd = socket(fam, SOCK_STREAM, 0);
	args[0] = fd, args[1] = low(&sdest), args[2] = len;
	r = int80(102, 3, low(args), 0);
	proxied_or_refused("socketcall-connect", r, fd);
	close(fd);

	/* socketcall(SYS_SOCKET) of a TCP socket, then socketcall(SYS_CONNECT) on it. */
	args[0] = fam, args[1] = SOCK_STREAM, args[2] = 0;
	r = int80(102, 1, low(args), 0);
	check(r >= 0, "socketcall-socket-tcp=%ld errno=%s", r, r < 0 ? res(r) : "0");
	if (r >= 0) {
		fd = r;
		args[0] = fd, args[1] = low(&sdest), args[2] = len;
		r = int80(102, 3, low(args), 0);
		proxied_or_refused("socketcall-connect-on-socketcall-socket", r, fd);
		close(fd);
	}

	/* socketcall(SYS_SENDTO) with MSG_FASTOPEN: a connect carrying data. */
	fd = socket(fam, SOCK_STREAM, 0);
	args[0] = fd, args[1] = low(sreq), args[2] = sizeof sreq - 1, args[3] = MSG_FASTOPEN;
	args[4] = low(&sdest), args[5] = len;
	r = int80(102, 11, low(args), 0);
	if (r == (long)(sizeof sreq - 1)) {
		char buf[4096];
		int body = read_reply(fd, buf, sizeof buf);
		check(body, "socketcall-sendto-fastopen=%ld outcome=proxied body=%s", r, body ? "canary" : "missing");
	} else {
		check(r == -EPERM, "socketcall-sendto-fastopen=%ld errno=%s outcome=refused", r, res(r));
	}
	close(fd);

	/* UDP through the i386 ABI: socketcall(SYS_SOCKET) and socket (359): made in the sandbox. */
	args[0] = fam, args[1] = SOCK_DGRAM, args[2] = 0;
	r = int80(102, 1, low(args), 0);
	check(r >= 0 && sandboxed(r), "socketcall-socket-udp=%ld errno=%s sandboxed", r, res(r));
	r = int80(359, fam, SOCK_DGRAM, 0);
	check(r >= 0 && sandboxed(r), "i386-socket-udp=%ld errno=%s sandboxed", r, res(r));
	args[0] = AF_INET, args[1] = SOCK_RAW, args[2] = IPPROTO_ICMP;
	r = int80(102, 1, low(args), 0);
	check(r == -EPERM, "socketcall-socket-raw=%ld errno=%s", r, res(r));
	return failures ? 1 : 0;
}
