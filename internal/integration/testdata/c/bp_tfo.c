/* bp_tfo IP PORT MODE: TCP Fast Open, a connect without connect(): the data of the first send goes
 * in the SYN to the address the send names. MODE:
 *   sendto, sendmsg, sendmmsg  MSG_FASTOPEN on an unconnected TCP socket, carrying an HTTP GET:
 *                              expected proxied, the canary's answer read back, peer = IP:PORT;
 *   connected                  MSG_FASTOPEN (sendto, sendmsg, sendmmsg; with and without an address)
 *                              on a socket already connected: each fails with EISCONN, as the kernel
 *                              fails it (checked natively on 127.0.0.1 by the Go test);
 *   noaddr                     MSG_FASTOPEN without an address on an unconnected socket: fails
 *                              (the kernel says EINVAL), nor with an AF_UNSPEC address (the kernel
 *                              says EOPNOTSUPP); nothing connected;
 *   plain                      sendto with an address and no flags on an unconnected TCP socket,
 *                              with and without TCP_FASTOPEN_CONNECT: EPIPE (TCP ignores the address);
 *   connectopt                 TCP_FASTOPEN_CONNECT set, then connect() and send: proxied. */
#include "bp_common.c"
#include <netinet/tcp.h>

#ifndef TCP_FASTOPEN_CONNECT
#define TCP_FASTOPEN_CONNECT 30
#endif

static struct sockaddr_storage dest;
static socklen_t dlen;

static void fastopen(const char *how)
{
	char buf[4096], seen[80];
	int fd = socket(dest.ss_family, SOCK_STREAM, 0);
	struct iovec iov = {(void *)http_req, sizeof http_req - 1};
	struct msghdr m = {.msg_name = &dest, .msg_namelen = dlen, .msg_iov = &iov, .msg_iovlen = 1};
	struct mmsghdr mm[1] = {{.msg_hdr = m}};
	long r, want = sizeof http_req - 1;
	set_timeouts(fd, 10);
	if (strcmp(how, "sendto") == 0) {
		r = sendto(fd, http_req, sizeof http_req - 1, MSG_FASTOPEN, (struct sockaddr *)&dest, dlen);
	} else if (strcmp(how, "sendmsg") == 0) {
		r = sendmsg(fd, &m, MSG_FASTOPEN);
	} else {
		r = sendmmsg(fd, mm, 1, MSG_FASTOPEN);
		if (r == 1) {
			check(mm[0].msg_len == (unsigned)want, "sendmmsg msg_len=%u", mm[0].msg_len);
			r = mm[0].msg_len;
		}
	}
	int e = errno;
	if (r != want) {
		check(0, "%s-fastopen=%ld errno=%s", how, r, r < 0 ? errname(e) : "0");
		return;
	}
	int body = read_reply(fd, buf, sizeof buf);
	int peer = peer_ok(fd, &dest, seen, sizeof seen);
	check(body && peer, "%s-fastopen=%ld body=%s peer=%s", how, r, body ? "canary" : "missing", seen);
	close(fd);
}

static void expect_fail(const char *what, long r, int want)
{
	int e = errno;
	check(r == -1 && e == want, "%s=%ld errno=%s", what, r, r < 0 ? errname(e) : "0");
}

static void connected(void)
{
	int fd = tcp_connect(&dest, dlen);
	if (fd < 0) {
		check(0, "connect=-1 errno=%s", errname(errno));
		return;
	}
	struct iovec iov = {(void *)http_req, sizeof http_req - 1};
	struct msghdr m = {.msg_name = &dest, .msg_namelen = dlen, .msg_iov = &iov, .msg_iovlen = 1};
	struct msghdr m0 = {.msg_iov = &iov, .msg_iovlen = 1};
	struct mmsghdr mm[1] = {{.msg_hdr = m}};
	expect_fail("connected-sendto-fastopen", sendto(fd, http_req, 4, MSG_FASTOPEN, (struct sockaddr *)&dest, dlen), EISCONN);
	expect_fail("connected-sendto-fastopen-noaddr", sendto(fd, http_req, 4, MSG_FASTOPEN, NULL, 0), EISCONN);
	expect_fail("connected-sendmsg-fastopen", sendmsg(fd, &m, MSG_FASTOPEN), EISCONN);
	expect_fail("connected-sendmsg-fastopen-noaddr", sendmsg(fd, &m0, MSG_FASTOPEN), EISCONN);
	expect_fail("connected-sendmmsg-fastopen", sendmmsg(fd, mm, 1, MSG_FASTOPEN), EISCONN);
	/* Nothing of the refused sends reached the peer: the connection still speaks HTTP cleanly. */
	int body = http_get(fd);
	check(body, "connected-then-get body=%s", body ? "canary" : "missing");
	close(fd);
}

static void noaddr(void)
{
	int fd = socket(dest.ss_family, SOCK_STREAM, 0);
	struct iovec iov = {(void *)http_req, sizeof http_req - 1};
	struct msghdr m0 = {.msg_iov = &iov, .msg_iovlen = 1};
	long r = sendto(fd, http_req, 4, MSG_FASTOPEN, NULL, 0);
	int e = errno;
	check(r == -1 && (e == EINVAL || e == EDESTADDRREQ), "unconnected-sendto-fastopen-noaddr=%ld errno=%s", r, r < 0 ? errname(e) : "0");
	r = sendmsg(fd, &m0, MSG_FASTOPEN);
	e = errno;
	check(r == -1 && (e == EINVAL || e == EDESTADDRREQ), "unconnected-sendmsg-fastopen-noaddr=%ld errno=%s", r, r < 0 ? errname(e) : "0");
	struct sockaddr un = {.sa_family = AF_UNSPEC};
	r = sendto(fd, http_req, 4, MSG_FASTOPEN, &un, sizeof un);
	e = errno;
	check(r == -1, "unconnected-sendto-fastopen-unspec=%ld errno=%s", r, r < 0 ? errname(e) : "0");
	struct sockaddr_storage p;
	socklen_t plen = sizeof p;
	expect_fail("unconnected-getpeername", getpeername(fd, (struct sockaddr *)&p, &plen), ENOTCONN);
	close(fd);
}

static void plain(void)
{
	int one = 1;
	for (int opt = 0; opt < 2; opt++) {
		int fd = socket(dest.ss_family, SOCK_STREAM, 0);
		if (opt)
			setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof one);
		long r = sendto(fd, http_req, sizeof http_req - 1, MSG_NOSIGNAL, (struct sockaddr *)&dest, dlen);
		expect_fail(opt ? "unconnected-sendto-plain-fastopen-connect-opt" : "unconnected-sendto-plain", r, EPIPE);
		close(fd);
	}
}

static void connectopt(void)
{
	char seen[80];
	int one = 1;
	int fd = socket(dest.ss_family, SOCK_STREAM, 0);
	int s = setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof one);
	int r = connect(fd, (struct sockaddr *)&dest, dlen);
	int e = errno;
	check(s == 0 && r == 0, "fastopen-connect-opt setsockopt=%d connect=%d errno=%s", s, r, r ? errname(e) : "0");
	if (r == 0) {
		int body = http_get(fd);
		int peer = peer_ok(fd, &dest, seen, sizeof seen);
		check(body && peer, "fastopen-connect-opt body=%s peer=%s", body ? "canary" : "missing", seen);
	}
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	bounded(30);
	dlen = parse_dest(argv[1], argv[2], &dest);
	const char *mode = argv[3];
	if (!strcmp(mode, "sendto") || !strcmp(mode, "sendmsg") || !strcmp(mode, "sendmmsg"))
		fastopen(mode);
	else if (!strcmp(mode, "connected"))
		connected();
	else if (!strcmp(mode, "noaddr"))
		noaddr();
	else if (!strcmp(mode, "plain"))
		plain();
	else if (!strcmp(mode, "connectopt"))
		connectopt();
	else
		return 2;
	return failures ? 1 : 0;
}
