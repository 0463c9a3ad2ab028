/* prog_dup IP PORT: dup and dup2 of a proxied socket: getpeername on each shows IP:PORT, the HTTP
 * exchange works over a dup. After the original and every dup are closed, a new socket that gets
 * the same descriptor number connects normally (not EISCONN, the C torsocks' bug with reused fd
 * numbers); repeated ROUNDS times. */
#include "bp_common.c"

int main(int argc, char **argv)
{
	char seen[80];
	if (argc != 3)
		return 2;
	bounded(40);
	struct sockaddr_storage dest;
	socklen_t len = parse_dest(argv[1], argv[2], &dest);
	int first = -1;
	for (int round = 0; round < 20; round++) {
		int fd = tcp_connect(&dest, len);
		if (fd < 0) {
			check(0, "round %d connect=-1 errno=%s", round, errname(errno));
			return 1;
		}
		if (first < 0)
			first = fd;
		else if (fd != first)
			check(0, "round %d fd=%d, not the reused number %d", round, fd, first);
		int d = dup(fd);
		int d2 = dup2(fd, 100);
		int pd = peer_ok(d, &dest, seen, sizeof seen);
		if (!pd || round == 0)
			check(pd, "round %d dup peer=%s", round, seen);
		int pd2 = peer_ok(d2, &dest, seen, sizeof seen);
		if (!pd2 || round == 0)
			check(pd2, "round %d dup2 peer=%s", round, seen);
		close(fd);
		int po = peer_ok(d2, &dest, seen, sizeof seen);
		if (!po || round == 0)
			check(po, "round %d dup2 after closing the original peer=%s", round, seen);
		int body = http_get(d);
		if (!body || round == 0)
			check(body, "round %d exchange over dup body=%s", round, body ? "canary" : "missing");
		close(d);
		close(d2);
	}
	check(1, "rounds=20 fd-reused=%d", first);
	return failures ? 1 : 0;
}
