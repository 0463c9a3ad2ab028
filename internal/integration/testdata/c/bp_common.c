/* Helpers shared by the bp_* and prog_* test programs. Each program #includes this file; it is
 * never compiled on its own. Everything here must also build with gcc -m32 -static. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

static __attribute__((unused)) const char *errname(int e)
{
	static char buf[16];
	switch (e) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EINTR: return "EINTR";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EINVAL: return "EINVAL";
	case EPIPE: return "EPIPE";
	case ENOSYS: return "ENOSYS";
	case ENOTSOCK: return "ENOTSOCK";
	case EDESTADDRREQ: return "EDESTADDRREQ";
	case EPROTOTYPE: return "EPROTOTYPE";
	case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
	case ESOCKTNOSUPPORT: return "ESOCKTNOSUPPORT";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case EAFNOSUPPORT: return "EAFNOSUPPORT";
	case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
	case ENETUNREACH: return "ENETUNREACH";
	case ECONNRESET: return "ECONNRESET";
	case EISCONN: return "EISCONN";
	case ENOTCONN: return "ENOTCONN";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ECONNREFUSED: return "ECONNREFUSED";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case EALREADY: return "EALREADY";
	case EINPROGRESS: return "EINPROGRESS";
	}
	snprintf(buf, sizeof buf, "E%d", e);
	return buf;
}

/* Every program is bounded in time even if the supervisor misbehaves. */
static __attribute__((unused)) void bounded(int secs)
{
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(secs);
}

/* parse_dest fills *ss from a numeric IPv4 or IPv6 address and a port. */
static __attribute__((unused)) socklen_t parse_dest(const char *ip, const char *port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(atoi(port));
		if (inet_pton(AF_INET6, ip, &s6->sin6_addr) != 1) {
			printf("bad address %s\n", ip);
			exit(2);
		}
		return sizeof *s6;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	s4->sin_family = AF_INET;
	s4->sin_port = htons(atoi(port));
	if (inet_pton(AF_INET, ip, &s4->sin_addr) != 1) {
		printf("bad address %s\n", ip);
		exit(2);
	}
	return sizeof *s4;
}

/* fmt_addr writes "ip:port" ("[ip]:port" for IPv6) of sa into out. */
static __attribute__((unused)) void fmt_addr(const struct sockaddr *sa, char *out, size_t n)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
		snprintf(out, n, "%s:%d", ip, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
		snprintf(out, n, "[%s]:%d", ip, ntohs(s6->sin6_port));
	} else {
		snprintf(out, n, "family%d", sa->sa_family);
	}
}

/* peer_ok reports whether getpeername(fd) shows dest; it writes what it saw into seen. */
static __attribute__((unused)) int peer_ok(int fd, const struct sockaddr_storage *dest, char *seen, size_t n)
{
	struct sockaddr_storage p;
	socklen_t len = sizeof p;
	char want[80];
	memset(&p, 0, sizeof p);
	if (getpeername(fd, (struct sockaddr *)&p, &len) < 0) {
		snprintf(seen, n, "getpeername-%s", errname(errno));
		return 0;
	}
	fmt_addr((struct sockaddr *)&p, seen, n);
	fmt_addr((const struct sockaddr *)dest, want, sizeof want);
	return strcmp(seen, want) == 0;
}

static __attribute__((unused)) void set_timeouts(int fd, int secs)
{
	struct timeval tv = {secs, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static const char http_req[] = "GET / HTTP/1.0\r\n\r\n";

/* read_reply reads until EOF (at most n-1 bytes, 10 s) and reports whether the canary answered. */
static __attribute__((unused)) int read_reply(int fd, char *buf, size_t n)
{
	size_t got = 0;
	set_timeouts(fd, 10);
	buf[0] = 0;
	for (;;) {
		ssize_t r = recv(fd, buf + got, n - 1 - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += r;
		buf[got] = 0;
		if (got == n - 1)
			break;
	}
	return strstr(buf, "canary") != NULL;
}

/* http_get sends a GET on a connected socket and reports whether the canary answered. */
static __attribute__((unused)) int http_get(int fd)
{
	char buf[4096];
	set_timeouts(fd, 10);
	if (send(fd, http_req, sizeof http_req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof http_req - 1))
		return 0;
	return read_reply(fd, buf, sizeof buf);
}

/* tcp_connect makes a TCP socket for dest and connects it; the fd or -1 (errno set). */
static __attribute__((unused)) int tcp_connect(const struct sockaddr_storage *dest, socklen_t len)
{
	int fd = socket(dest->ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)dest, len) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int failures;

/* check prints one result line and counts it as a failure unless ok. */
static __attribute__((unused)) void check(int ok, const char *fmt, ...)
{
	va_list ap;
	printf("RESULT ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" %s\n", ok ? "ok" : "UNEXPECTED");
	if (!ok)
		failures++;
}

/* sandboxed: fd lives in another network namespace than the program's own (torsocks' sandbox,
 * where nothing sent leaves the machine). The program's own is a unix socket's: torsocks never
 * moves those (with SealedNetwork 1 a TCP socket made now is in the sandbox too). SO_NETNS_COOKIE
 * is 71. */
static __attribute__((unused)) int sandboxed(int fd)
{
	unsigned long long a = 0, b = 0;
	socklen_t l = sizeof a;
	int t = socket(AF_UNIX, SOCK_STREAM, 0);
	if (t < 0 || getsockopt(fd, SOL_SOCKET, 71, &a, &l) != 0)
		return 0;
	l = sizeof b;
	int ok = getsockopt(t, SOL_SOCKET, 71, &b, &l) == 0 && a && b && a != b;
	close(t);
	return ok;
}
