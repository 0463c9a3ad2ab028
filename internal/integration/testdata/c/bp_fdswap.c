/* bp_fdswap IP PORT MODE [MILLIS]: a time-of-check/time-of-use race on what a descriptor number
 * names. One thread calls, over and over, a network call on descriptor number N; another keeps
 * re-pointing N (dup2) between a unix socket and a fresh TCP socket. A supervisor that inspects
 * the socket behind N and then lets the kernel run the call (seccomp CONTINUE) for a unix socket
 * lets the kernel look N up again -- maybe finding the TCP socket, which then connects directly.
 * MODE:
 *   connect     connect(N, IP:PORT)
 *   tfo         sendto(N, data, MSG_FASTOPEN, IP:PORT)
 *   socketcall  i386 socketcall(SYS_CONNECT, {N, IP:PORT}) through int $0x80
 *   scargs      i386 socketcall(SYS_CONNECT, args) with args[0] itself flipped in memory between
 *               the unix socket and the TCP socket (no dup2): the kernel re-reads args on CONTINUE
 *   listen      listen(N), N flipped between a TCP socket bound to loopback (listening there is
 *               allowed) and fresh TCP sockets bound to the wildcard address (refused without
 *               AllowInbound): none of the latter may end up listening
 * Built -no-pie -static (32-bit pointers to static data). Every TCP socket is kept open until the
 * end and then inspected: one connected on this machine's network with a non-loopback local address
 * was connected directly (a proxied one is connected to the SOCKS port on loopback, or, with
 * SealedNetwork 1, lives in torsocks' sandbox). Prints the counts; exits 1 on a leak. */
#include "bp_common.c"
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <time.h>

#define MAXSOCK 900
#define N 200 /* the contested descriptor number */

static struct sockaddr_storage sdest;
static socklen_t dlen;
static volatile uint32_t args[3];
static int tcp[MAXSOCK];
static atomic_int ntcp, stop;
static int unixfd; /* the harmless socket: unix, or loopback-bound TCP for listen */
static const char *mode;

static void bind_any(int fd, int loopback);

static long int80(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory", "r8", "r9", "r10", "r11");
	return ret;
}

static void spin(int n)
{
	for (volatile int i = 0; i < n; i++)
		;
}

static void *swapper(void *arg)
{
	(void)arg;
	int memswap = strcmp(mode, "scargs") == 0;
	while (!atomic_load(&stop)) {
		int i = atomic_load(&ntcp);
		if (i >= MAXSOCK)
			break;
		int t = socket(sdest.ss_family, SOCK_STREAM, 0);
		if (t < 0)
			break;
		if (!strcmp(mode, "listen"))
			bind_any(t, 0);
		tcp[i] = t;
		atomic_store(&ntcp, i + 1);
		for (int k = 0; k < 200 && !atomic_load(&stop); k++) {
			if (memswap) {
				args[0] = t;
				spin(50 + k % 7 * 30);
				args[0] = unixfd;
				spin(50 + k % 5 * 30);
			} else {
				dup2(t, N);
				spin(50 + k % 7 * 30);
				dup2(unixfd, N);
				spin(50 + k % 5 * 30);
			}
		}
	}
	return NULL;
}

/* bind_any binds fd to the loopback or the wildcard address of dest's family, port 0. */
static void bind_any(int fd, int loopback)
{
	struct sockaddr_storage a;
	memset(&a, 0, sizeof a);
	a.ss_family = sdest.ss_family;
	if (a.ss_family == AF_INET && loopback)
		((struct sockaddr_in *)&a)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (a.ss_family == AF_INET6 && loopback)
		((struct sockaddr_in6 *)&a)->sin6_addr = in6addr_loopback;
	if (bind(fd, (struct sockaddr *)&a, dlen) < 0)
		printf("bind: %s\n", errname(errno));
}

static int is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	const struct in6_addr *a = &((struct sockaddr_in6 *)ss)->sin6_addr;
	if (IN6_IS_ADDR_LOOPBACK(a))
		return 1;
	return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	mode = argv[3];
	int millis = argc > 4 ? atoi(argv[4]) : 1500;
	bounded(60);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	dlen = parse_dest(argv[1], argv[2], &sdest);
	if ((uintptr_t)&sdest > 0xffffffffu || (uintptr_t)args > 0xffffffffu) {
		printf("SKIP static data above 4 GiB\n");
		return 3;
	}
	if (!strcmp(mode, "listen")) {
		unixfd = socket(sdest.ss_family, SOCK_STREAM, 0);
		bind_any(unixfd, 1);
	} else {
		unixfd = socket(AF_UNIX, SOCK_STREAM, 0);
	}
	dup2(unixfd, N);
	args[0] = strcmp(mode, "scargs") == 0 ? unixfd : N;
	args[1] = (uint32_t)(uintptr_t)&sdest;
	args[2] = dlen;
	pthread_t th;
	pthread_create(&th, NULL, swapper, NULL);
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long calls = 0, ok = 0;
	for (;;) {
		long r;
		if (!strcmp(mode, "connect"))
			r = connect(N, (struct sockaddr *)&sdest, dlen);
		else if (!strcmp(mode, "listen"))
			r = listen(N, 5);
		else if (!strcmp(mode, "tfo"))
			r = sendto(N, http_req, sizeof http_req - 1, MSG_FASTOPEN, (struct sockaddr *)&sdest, dlen);
		else
			r = int80(102, 3, (long)(uintptr_t)args, 0);
		calls++;
		if (r >= 0)
			ok++;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 > millis ||
		    atomic_load(&ntcp) >= MAXSOCK)
			break;
	}
	atomic_store(&stop, 1);
	pthread_join(th, NULL);
	int n = atomic_load(&ntcp), connected = 0, direct = 0;
	for (int i = 0; i < n && !strcmp(mode, "listen"); i++) {
		int acc = 0;
		socklen_t al = sizeof acc;
		if (getsockopt(tcp[i], SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) == 0 && acc)
			direct++;
	}
	for (int i = 0; i < n; i++) {
		struct sockaddr_storage local, peer;
		socklen_t ll = sizeof local, pl = sizeof peer;
		if (getpeername(tcp[i], (struct sockaddr *)&peer, &pl) < 0)
			continue;
		connected++;
		/* In torsocks' sandbox (SealedNetwork 1) every address is local and nothing leads out:
		 * a socket connected there is never direct, whatever its local address. */
		if (sandboxed(tcp[i]))
			continue;
		if (getsockname(tcp[i], (struct sockaddr *)&local, &ll) == 0 && !is_loopback(&local)) {
			char a[80];
			fmt_addr((struct sockaddr *)&local, a, sizeof a);
			if (direct < 5)
				printf("direct connection from %s\n", a);
			direct++;
		}
	}
	printf("RESULT mode=%s calls=%ld succeeded=%ld tcp-sockets=%d connected=%d direct-or-wildcard-listening=%d %s\n", mode, calls, ok, n,
	       connected, direct, direct ? "UNEXPECTED" : "ok");
	return direct ? 1 : 0;
}
