// Asynchronous connects (issue 11), from one thread.
//
//   as_connect many N HOST PORT [strict]
//     N non-blocking sockets connect to HOST:PORT (an HTTP canary); even ones are registered in
//     an epoll set before connect (as Go does), odd ones after (libuv, asyncio). With strict:
//     each connect must answer EINPROGRESS, a second connect EALREADY, getpeername ENOTCONN,
//     and no socket may be writable before the others were all started. Then each, once
//     writable: SO_ERROR 0, getpeername HOST:PORT, connect again EISCONN, an HTTP GET whose
//     answer is the canary's. Prints "many ok N". AS_WAIT=poll or select waits with poll() or
//     select() instead of epoll. AS_SIGNALS=restart: a SIGALRM every AS_SIGNAL_US
//     (default 200 us) and a SIGUSR1 from a child every ms, both SA_RESTART, from before the
//     first connect to the end; a socket() or connect() failing EINTR is an error (the kernel
//     never gives it for them); the waits are retried on EINTR. AS_SIGNALS=norestart: the same
//     with SIGALRM's handler without SA_RESTART: socket() and connect() failing EINTR (a
//     notification withdrawn before the supervisor read it, docs/design.md) are retried and
//     counted. Prints "signals N eintr M" (SIGALRMs handled, EINTR retries).
//   as_connect refuse HOST PORT...
//     one non-blocking connect per port, all in flight at once; prints "PORT errno-name" per port
//     with SO_ERROR after writability, and what a connect() after that answers.
//   as_connect early HOST PORT
//     connect, write a request before polling (EAGAIN expected: not writable yet), read before
//     polling (EAGAIN), then poll and do the GET.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *ename(int e) {
	switch (e) {
	case 0: return "OK";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ENETUNREACH: return "ENETUNREACH";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ECONNABORTED: return "ECONNABORTED";
	case ECONNRESET: return "ECONNRESET";
	case EINPROGRESS: return "EINPROGRESS";
	case EALREADY: return "EALREADY";
	case EISCONN: return "EISCONN";
	case EAGAIN: return "EAGAIN";
	case ENOTCONN: return "ENOTCONN";
	case EPIPE: return "EPIPE";
	}
	static char b[32];
	snprintf(b, sizeof b, "errno%d", e);
	return b;
}

static int norestart, neintr;

// retry says whether a socket() or connect() that failed should be made again: EINTR under
// AS_SIGNALS=norestart.
static int retry(int r) {
	if (r < 0 && errno == EINTR && norestart) {
		neintr++;
		return 1;
	}
	return 0;
}

static socklen_t addr(const char *host, int port, struct sockaddr_storage *ss) {
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *a4 = (void *)ss;
	struct sockaddr_in6 *a6 = (void *)ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		return sizeof *a4;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		return sizeof *a6;
	}
	fprintf(stderr, "bad address %s\n", host);
	exit(2);
}

#define die(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); exit(1); } while (0)

static int soerror(int fd) {
	int e = 0;
	socklen_t l = sizeof e;
	int r;
	while (retry(r = getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l)))
		;
	if (r < 0)
		die("SO_ERROR: %s", strerror(errno));
	return e;
}

static void get(int fd, const char *host) {
	const char req[] = "GET / HTTP/1.0\r\n\r\n";
	if (write(fd, req, sizeof req - 1) != (ssize_t)sizeof req - 1)
		die("write: %s", ename(errno));
	char buf[4096];
	size_t got = 0;
	for (;;) {
		struct pollfd p = {fd, POLLIN, 0};
		int k = poll(&p, 1, 20000);
		if (k < 0 && errno == EINTR)
			continue;
		if (k != 1)
			die("no answer");
		ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
		if (n < 0 && errno == EAGAIN)
			continue;
		if (n < 0)
			die("read: %s", ename(errno));
		if (n == 0)
			break;
		got += n;
	}
	buf[got] = 0;
	char want[128];
	snprintf(want, sizeof want, "canary %s", host);
	if (!strstr(buf, "200 OK") || !strstr(buf, "says hello"))
		die("unexpected answer: %s", buf);
	(void)want;
}

static volatile sig_atomic_t nsig;
static void onsig(int s) { (void)s; nsig++; }

// storm starts the signals of AS_SIGNALS; returns the child's pid (killed at the end).
static pid_t storm(void) {
	struct sigaction sa = {0};
	sa.sa_handler = onsig;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	norestart = !strcmp(getenv("AS_SIGNALS"), "norestart");
	if (norestart)
		sa.sa_flags = 0; // interruptible calls fail EINTR
	sigaction(SIGALRM, &sa, NULL);
	int us = getenv("AS_SIGNAL_US") && *getenv("AS_SIGNAL_US") ? atoi(getenv("AS_SIGNAL_US")) : 200;
	struct itimerval it = {{0, us}, {0, us}};
	setitimer(ITIMER_REAL, &it, NULL);
	pid_t parent = getpid(), c = fork();
	if (c == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); // gone with the program, whatever it dies of
		if (getppid() != parent)
			_exit(0);
		for (;;) {
			kill(parent, SIGUSR1);
			usleep(1000);
		}
	}
	return c;
}

// ready waits with poll() or select() for the first of fds[i] (not done) to become writable or
// readable and returns its index.
static int ready(const char *how, int n, int *fds, int *done) {
	for (;;) {
		if (!strcmp(how, "poll")) {
			struct pollfd p[n];
			for (int i = 0; i < n; i++)
				p[i] = (struct pollfd){done[i] ? -1 : fds[i], POLLOUT | POLLIN, 0};
			int k = poll(p, n, 30000);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				die("poll: %d %s", k, ename(errno));
			for (int i = 0; i < n; i++)
				if (p[i].revents)
					return i;
		} else {
			fd_set w, r;
			FD_ZERO(&w);
			FD_ZERO(&r);
			int max = -1;
			for (int i = 0; i < n; i++)
				if (!done[i]) {
					if (fds[i] >= FD_SETSIZE)
						die("fd %d too large for select", fds[i]);
					FD_SET(fds[i], &w);
					FD_SET(fds[i], &r);
					max = fds[i] > max ? fds[i] : max;
				}
			struct timeval tv = {30, 0};
			int k = select(max + 1, &r, &w, NULL, &tv);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				die("select: %d %s", k, ename(errno));
			for (int i = 0; i < n; i++)
				if (!done[i] && (FD_ISSET(fds[i], &w) || FD_ISSET(fds[i], &r)))
					return i;
		}
	}
}

static int same_peer(int fd, struct sockaddr_storage *want, socklen_t wl) {
	struct sockaddr_storage ss;
	socklen_t l = sizeof ss;
	int r;
	while (retry(r = getpeername(fd, (void *)&ss, &l)))
		;
	if (r < 0)
		return 0;
	return l == wl && memcmp(&ss, want, wl) == 0;
}

int main(int argc, char **argv) {
	if (argc < 4)
		die("usage");
	const char *mode = argv[1];
	if (!strcmp(mode, "many")) {
		int n = atoi(argv[2]);
		const char *host = argv[3];
		int port = atoi(argv[4]);
		int strict = argc > 5;
		const char *how = getenv("AS_WAIT") ? getenv("AS_WAIT") : "epoll";
		pid_t stormer = getenv("AS_SIGNALS") ? storm() : 0;
		struct sockaddr_storage ss;
		socklen_t sl = addr(host, port, &ss);
		int ep = epoll_create1(EPOLL_CLOEXEC);
		int *fds = calloc(n, sizeof *fds);
		int *done = calloc(n, sizeof *done);
		for (int i = 0; i < n; i++) {
			while (retry(fds[i] = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0)))
				;
			if (fds[i] < 0)
				die("socket: %s", strerror(errno));
			struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = i};
			if (i % 2 == 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
				die("epoll_ctl: %s", strerror(errno));
			int r;
			while (retry(r = connect(fds[i], (void *)&ss, sl)))
				;
			if (r < 0 && errno != EINPROGRESS)
				die("connect %d: %s", i, ename(errno));
			if (strict) {
				if (r == 0)
					die("connect %d: 0, want EINPROGRESS", i);
				while (retry(r = connect(fds[i], (void *)&ss, sl)))
					;
				if (r == 0 || errno != EALREADY)
					die("connect again %d: %s, want EALREADY", i, r == 0 ? "0" : ename(errno));
				struct sockaddr_storage p;
				socklen_t pl = sizeof p;
				while (retry(r = getpeername(fds[i], (void *)&p, &pl)))
					;
				if (r == 0 || errno != ENOTCONN)
					die("getpeername %d in progress: want ENOTCONN", i);
			}
			if (i % 2 == 1 && epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
				die("epoll_ctl: %s", strerror(errno));
		}
		if (strict) {
			struct pollfd p = {fds[0], POLLOUT | POLLIN, 0};
			int k;
			while ((k = poll(&p, 1, 0)) < 0 && errno == EINTR)
				;
			if (k != 0)
				die("socket 0 ready (%#x) before Tor could have answered", p.revents);
		}
		int left = n;
		while (left > 0) {
			struct epoll_event evs[64];
			int k;
			if (strcmp(how, "epoll")) {
				evs[0].data.u32 = ready(how, n, fds, done);
				k = 1;
			} else if ((k = epoll_wait(ep, evs, 64, 30000)) < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				die("epoll_wait: %d, %d left", k, left);
			for (int j = 0; j < k; j++) {
				int i = evs[j].data.u32;
				if (done[i])
					continue;
				int e = soerror(fds[i]);
				if (e)
					die("SO_ERROR %d: %s", i, ename(e));
				if (!same_peer(fds[i], &ss, sl))
					die("getpeername %d: not the destination", i);
				int r;
				while (retry(r = connect(fds[i], (void *)&ss, sl)))
					;
				if (r == 0 || errno != EISCONN)
					die("connect when connected %d: want EISCONN", i);
				epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
				done[i] = 1;
				left--;
			}
		}
		for (int i = 0; i < n; i++) {
			get(fds[i], host);
			close(fds[i]);
		}
		if (stormer) {
			struct itimerval off = {0};
			setitimer(ITIMER_REAL, &off, NULL);
			kill(stormer, SIGKILL);
			waitpid(stormer, NULL, 0);
			printf("signals %d eintr %d\n", (int)nsig, neintr);
		}
		printf("many ok %d\n", n);
		return 0;
	}
	if (!strcmp(mode, "refuse")) {
		const char *host = argv[2];
		int k = argc - 3;
		int *fds = calloc(k, sizeof *fds);
		struct pollfd *p = calloc(k, sizeof *p);
		for (int i = 0; i < k; i++) {
			struct sockaddr_storage ss;
			socklen_t sl = addr(host, atoi(argv[3 + i]), &ss);
			fds[i] = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
			int r = connect(fds[i], (void *)&ss, sl);
			if (r == 0 || errno != EINPROGRESS)
				die("connect %s: %s, want EINPROGRESS", argv[3 + i], r == 0 ? "0" : ename(errno));
			p[i].fd = fds[i];
			p[i].events = POLLOUT;
		}
		for (int i = 0; i < k; i++) {
			if (poll(&p[i], 1, 60000) != 1)
				die("port %s: never writable", argv[3 + i]);
			int e = soerror(fds[i]);
			struct sockaddr_storage ss;
			socklen_t sl = addr(host, atoi(argv[3 + i]), &ss);
			int r = connect(fds[i], (void *)&ss, sl);
			printf("%s %s then-connect %s\n", argv[3 + i], ename(e), r == 0 ? "0" : ename(errno));
		}
		return 0;
	}
	if (!strcmp(mode, "early")) {
		const char *host = argv[2];
		struct sockaddr_storage ss;
		socklen_t sl = addr(host, atoi(argv[3]), &ss);
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
		int r = connect(fd, (void *)&ss, sl);
		if (r == 0 || errno != EINPROGRESS)
			die("connect: want EINPROGRESS");
		char b[16];
		r = read(fd, b, sizeof b);
		printf("read-before %s\n", r < 0 ? ename(errno) : "data");
		r = write(fd, "x", 0);
		r = send(fd, "GET", 3, MSG_DONTWAIT | MSG_NOSIGNAL);
		printf("write-before %s\n", r < 0 ? ename(errno) : "sent");
		struct pollfd p = {fd, POLLOUT, 0};
		if (poll(&p, 1, 30000) != 1 || soerror(fd))
			die("not connected");
		get(fd, host);
		printf("early ok\n");
		return 0;
	}
	die("unknown mode %s", mode);
}
