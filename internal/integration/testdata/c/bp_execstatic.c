/* bp_execstatic exec CHILD ARGS...: fork, exec CHILD ARGS... (a static program: nothing an
 * LD_PRELOAD could reach), wait, and exit with its status.
 * bp_execstatic connect IP PORT: connect with libc, HTTP GET, getpeername; the child's role.
 * Built twice by the tests: dynamic (the parent) and -static (the child). */
#include "bp_common.c"
#include <sys/wait.h>

int main(int argc, char **argv)
{
	char seen[80];
	if (argc >= 3 && strcmp(argv[1], "exec") == 0) {
		bounded(50);
		pid_t pid = fork();
		if (pid == 0) {
			execv(argv[2], argv + 2);
			printf("exec %s: %s\n", argv[2], errname(errno));
			_exit(127);
		}
		int st;
		if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st)) {
			printf("RESULT child did not exit normally (status %#x) UNEXPECTED\n", st);
			return 1;
		}
		printf("RESULT child exit=%d %s\n", WEXITSTATUS(st), WEXITSTATUS(st) ? "UNEXPECTED" : "ok");
		return WEXITSTATUS(st);
	}
	if (argc != 4 || strcmp(argv[1], "connect") != 0)
		return 2;
	bounded(30);
	struct sockaddr_storage dest;
	socklen_t len = parse_dest(argv[2], argv[3], &dest);
	int fd = tcp_connect(&dest, len);
	if (fd < 0) {
		check(0, "child connect=-1 errno=%s", errname(errno));
		return 1;
	}
	int body = http_get(fd);
	int peer = peer_ok(fd, &dest, seen, sizeof seen);
	check(body && peer, "child connect=0 body=%s peer=%s", body ? "canary" : "missing", seen);
	return failures ? 1 : 0;
}
