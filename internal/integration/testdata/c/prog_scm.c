/* prog_scm IP PORT: process A connects, starts B (fork + exec of this program) with one end of a
 * unix socketpair, passes the connected socket over it (SCM_RIGHTS) and closes its copy. B (prog_scm
 * recv FD IP PORT) receives it, calls getpeername (IP:PORT expected, not Tor's address) and does the
 * HTTP exchange. */
#include "bp_common.c"
#include <sys/wait.h>

static int recv_fd(int us)
{
	char c;
	struct iovec iov = {&c, 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
	if (recvmsg(us, &m, 0) != 1)
		return -1;
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	if (!h || h->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(h), sizeof fd);
	return fd;
}

static int send_fd(int us, int fd)
{
	char c = 'F';
	struct iovec iov = {&c, 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	memset(&u, 0, sizeof u);
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof fd);
	return sendmsg(us, &m, 0) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage dest;
	char seen[80];
	if (argc == 5 && strcmp(argv[1], "recv") == 0) {
		bounded(30);
		parse_dest(argv[3], argv[4], &dest);
		int fd = recv_fd(atoi(argv[2]));
		if (fd < 0) {
			check(0, "B recv fd failed");
			return 1;
		}
		int peer = peer_ok(fd, &dest, seen, sizeof seen);
		int body = http_get(fd);
		check(peer && body, "B pid-differs=1 peer=%s body=%s", seen, body ? "canary" : "missing");
		return failures ? 1 : 0;
	}
	if (argc != 3)
		return 2;
	bounded(40);
	socklen_t len = parse_dest(argv[1], argv[2], &dest);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
		return 1;
	pid_t pid = fork();
	if (pid == 0) {
		char fdarg[16];
		close(sp[0]);
		snprintf(fdarg, sizeof fdarg, "%d", sp[1]);
		execl("/proc/self/exe", argv[0], "recv", fdarg, argv[1], argv[2], (char *)NULL);
		_exit(127);
	}
	close(sp[1]);
	int fd = tcp_connect(&dest, len);
	if (fd < 0) {
		check(0, "A connect=-1 errno=%s", errname(errno));
		kill(pid, SIGKILL);
		return 1;
	}
	int peer = peer_ok(fd, &dest, seen, sizeof seen);
	check(peer, "A connect=0 peer=%s", seen);
	check(send_fd(sp[0], fd) == 0, "A sent fd");
	close(fd);
	int st;
	waitpid(pid, &st, 0);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "B exit status=%#x", st);
	return failures ? 1 : 0;
}
