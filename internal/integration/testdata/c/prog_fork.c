/* prog_fork IP PORT: the parent connects and forks; the child uses the inherited socket (getpeername
 * must show IP:PORT, not Tor's address; then an HTTP exchange). A second child connects by itself.
 * Then the parent, after the first child is done with it, still sees IP:PORT as the peer. */
#include "bp_common.c"
#include <sys/wait.h>

static struct sockaddr_storage dest;
static socklen_t dlen;

static int wait_child(pid_t pid)
{
	int st;
	if (waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
	char seen[80];
	if (argc != 3)
		return 2;
	bounded(40);
	dlen = parse_dest(argv[1], argv[2], &dest);
	int fd = tcp_connect(&dest, dlen);
	if (fd < 0) {
		check(0, "parent connect=-1 errno=%s", errname(errno));
		return 1;
	}
	pid_t pid = fork();
	if (pid == 0) {
		int peer = peer_ok(fd, &dest, seen, sizeof seen);
		int body = http_get(fd);
		check(peer && body, "child(inherited) peer=%s body=%s", seen, body ? "canary" : "missing");
		_exit(failures ? 1 : 0);
	}
	int st1 = wait_child(pid);
	int peer = peer_ok(fd, &dest, seen, sizeof seen);
	check(peer, "parent after child peer=%s", seen);
	close(fd);

	pid = fork();
	if (pid == 0) {
		int cfd = tcp_connect(&dest, dlen);
		if (cfd < 0) {
			check(0, "child(own) connect=-1 errno=%s", errname(errno));
			_exit(1);
		}
		int p = peer_ok(cfd, &dest, seen, sizeof seen);
		int body = http_get(cfd);
		check(p && body, "child(own) connect=0 peer=%s body=%s", seen, body ? "canary" : "missing");
		_exit(failures ? 1 : 0);
	}
	int st2 = wait_child(pid);
	check(st1 == 0 && st2 == 0, "children exit=%d,%d", st1, st2);
	return failures ? 1 : 0;
}
