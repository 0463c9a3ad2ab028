/* bp_refuse IP PORT: connects that must not be carried, and a second connect on a proxied socket.
 *   - connect to IP:PORT, HTTP GET: proxied; a second connect on it: EISCONN (also to another
 *     address); the connection still works afterwards;
 *   - 127.0.0.1:80, [::1]:80, an IPv6 socket to ::ffff:127.0.0.1, 0.0.0.0 and [::]: EPERM;
 *   - an IPv6 socket to ::ffff:IP (IPv4 destinations only): proxied, getpeername shows the
 *     v4-mapped address the program used. */
#include "bp_common.c"

static void refused(const char *ip, const char *port)
{
	struct sockaddr_storage d;
	socklen_t len = parse_dest(ip, port, &d);
	int fd = tcp_connect(&d, len);
	int e = errno;
	check(fd < 0 && e == EPERM, "connect %s:%s=%d errno=%s", ip, port, fd < 0 ? -1 : 0, fd < 0 ? errname(e) : "0");
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv)
{
	char seen[80];
	if (argc != 3)
		return 2;
	bounded(30);
	struct sockaddr_storage dest, other;
	socklen_t len = parse_dest(argv[1], argv[2], &dest);
	int fd = tcp_connect(&dest, len);
	if (fd < 0) {
		check(0, "connect=-1 errno=%s", errname(errno));
		return 1;
	}
	int r = connect(fd, (struct sockaddr *)&dest, len);
	int e = errno;
	check(r == -1 && e == EISCONN, "second-connect=%d errno=%s", r, r ? errname(e) : "0");
	socklen_t olen = parse_dest(dest.ss_family == AF_INET ? "203.0.113.99" : "2001:db8::99", "81", &other);
	r = connect(fd, (struct sockaddr *)&other, olen);
	e = errno;
	check(r == -1 && e == EISCONN, "second-connect-elsewhere=%d errno=%s", r, r ? errname(e) : "0");
	int body = http_get(fd);
	int peer = peer_ok(fd, &dest, seen, sizeof seen);
	check(body && peer, "after-second-connect body=%s peer=%s", body ? "canary" : "missing", seen);
	close(fd);

	refused("127.0.0.1", "80");
	refused("127.0.0.1", "9051");
	refused("::1", "80");
	refused("::ffff:127.0.0.1", "80");
	refused("0.0.0.0", "80");
	refused("::", "80");

	if (dest.ss_family == AF_INET) {
		char mapped[64];
		snprintf(mapped, sizeof mapped, "::ffff:%s", argv[1]);
		struct sockaddr_storage m;
		socklen_t mlen = parse_dest(mapped, argv[2], &m);
		fd = tcp_connect(&m, mlen);
		if (fd < 0) {
			check(0, "connect [%s]=-1 errno=%s", mapped, errname(errno));
		} else {
			body = http_get(fd);
			peer = peer_ok(fd, &m, seen, sizeof seen);
			check(body && peer, "connect [%s]=0 body=%s peer=%s", mapped, body ? "canary" : "missing", seen);
			close(fd);
		}
	}
	return failures ? 1 : 0;
}
