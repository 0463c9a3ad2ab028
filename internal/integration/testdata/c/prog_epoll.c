/* prog_epoll IP PORT: a non-blocking socket registered with epoll BEFORE connect (an event loop);
 * connect returns 0 or EINPROGRESS, EPOLLOUT arrives, SO_ERROR is 0, getpeername shows IP:PORT,
 * and the HTTP exchange runs edge-triggered through the same epoll. Done twice: SOCK_NONBLOCK at
 * creation and O_NONBLOCK by fcntl. */
#include "bp_common.c"
#include <fcntl.h>
#include <sys/epoll.h>

static struct sockaddr_storage dest;
static socklen_t dlen;

static void once(int byfcntl)
{
	char seen[80], buf[4096];
	const char *how = byfcntl ? "fcntl" : "sock_nonblock";
	int fd = socket(dest.ss_family, SOCK_STREAM | (byfcntl ? 0 : SOCK_NONBLOCK), 0);
	if (byfcntl)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.fd = fd}, out[4];
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		check(0, "%s epoll_ctl errno=%s", how, errname(errno));
		return;
	}
	int r = connect(fd, (struct sockaddr *)&dest, dlen);
	int e = errno;
	check(r == 0 || e == EINPROGRESS, "%s connect=%d errno=%s", how, r, r ? errname(e) : "0");
	if (r != 0 && e != EINPROGRESS)
		return;
	int n = epoll_wait(ep, out, 4, 10000);
	int soerr = -1;
	socklen_t sl = sizeof soerr;
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
	check(n == 1 && (out[0].events & EPOLLOUT) && soerr == 0, "%s epoll_wait=%d events=%#x SO_ERROR=%d", how, n,
	      n > 0 ? out[0].events : 0, soerr);
	int peer = peer_ok(fd, &dest, seen, sizeof seen);
	check(peer, "%s peer=%s", how, seen);
	/* The flag stayed as the program set it. */
	check(fcntl(fd, F_GETFL) & O_NONBLOCK, "%s still-nonblocking", how);
	ssize_t s = send(fd, http_req, sizeof http_req - 1, MSG_NOSIGNAL);
	check(s == sizeof http_req - 1, "%s send=%zd", how, s);
	size_t got = 0;
	int eof = 0;
	while (!eof) {
		ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
		if (k > 0) {
			got += k;
			continue;
		}
		if (k == 0)
			break;
		if (errno != EAGAIN) {
			printf("recv: %s\n", errname(errno));
			break;
		}
		n = epoll_wait(ep, out, 4, 10000);
		if (n <= 0) {
			printf("epoll_wait for data: %d\n", n);
			break;
		}
	}
	buf[got] = 0;
	check(strstr(buf, "canary") != NULL, "%s body=%s", how, strstr(buf, "canary") ? "canary" : "missing");
	close(ep);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	bounded(40);
	dlen = parse_dest(argv[1], argv[2], &dest);
	once(0);
	once(1);
	return failures ? 1 : 0;
}
