// hs_attach: a hostile program trying to take over another process, as a program under torsocks
// would try its supervisor or a process started outside torsocks. For each PID argument it prints
//   LABEL ptrace=R mem=R fd=R vm=R getfd=R
// where R is "denied" (EPERM/EACCES) or "open" (anything else: the way is open). With the
// argument "tree" it does the same to a child it forks (ptrace inside the tree must keep working),
// with "parent" to its parent (the supervisor), with "siblings" to every other child of its parent
// (the UDP sandbox's socket factory, which it first makes torsocks start by making a UDP socket).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

// ppid_of returns the parent of pid, or -1.
static pid_t ppid_of(pid_t pid) {
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')'); // comm may hold spaces and parentheses
	int ppid;
	if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
		return -1;
	return ppid;
}

static const char *res(int ok) {
	if (ok)
		return "open";
	return (errno == EPERM || errno == EACCES) ? "denied" : "open";
}

static int probe(const char *label, pid_t pid) {
	char path[64];
	int r;
	printf("%s", label);

	r = ptrace(PTRACE_SEIZE, pid, 0, 0);
	printf(" ptrace=%s", res(r == 0));
	if (r == 0)
		ptrace(PTRACE_DETACH, pid, 0, 0);

	snprintf(path, sizeof path, "/proc/%d/mem", pid);
	r = open(path, O_RDWR | O_CLOEXEC);
	printf(" mem=%s", res(r >= 0));
	if (r >= 0)
		close(r);

	snprintf(path, sizeof path, "/proc/%d/fd/0", pid);
	r = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (r < 0 && errno == ENOENT) // no fd 0 there, but the directory was readable
		errno = 0;
	printf(" fd=%s", res(r >= 0));
	if (r >= 0)
		close(r);

	char buf[8];
	static char there[8];
	struct iovec local = {buf, sizeof buf}, remote = {there, sizeof there};
	r = (int)process_vm_readv(pid, &local, 1, &remote, 1, 0);
	printf(" vm=%s", res(r >= 0));

	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		printf(" getfd=pidfd_open:%s\n", strerror(errno));
		return 1;
	}
	r = (int)syscall(SYS_pidfd_getfd, pidfd, 0, 0);
	printf(" getfd=%s\n", res(r >= 0));
	if (r >= 0)
		close(r);
	close(pidfd);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IONBF, 0);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "tree") == 0) {
			int p[2];
			if (pipe(p) < 0)
				return 2;
			pid_t c = fork();
			if (c == 0) {
				close(p[0]);
				write(p[1], "r", 1); // running
				pause();
				_exit(0);
			}
			close(p[1]);
			char b;
			read(p[0], &b, 1);
			probe("tree", c);
			kill(c, SIGKILL);
			waitpid(c, NULL, 0);
			continue;
		}
		if (strcmp(argv[i], "siblings") == 0) {
			// The factory is started on the first UDP socket (at once when not root).
			int udp = socket(AF_INET, SOCK_DGRAM, 0);
			DIR *d = opendir("/proc");
			struct dirent *e;
			int found = 0;
			while (d && (e = readdir(d))) {
				pid_t p = atoi(e->d_name);
				if (p > 0 && p != getpid() && ppid_of(p) == getppid()) {
					probe("sibling", p);
					found++;
				}
			}
			if (d)
				closedir(d);
			printf("siblings %d\n", found);
			if (udp >= 0)
				close(udp);
			continue;
		}
		char label[32];
		pid_t pid = atoi(argv[i]);
		if (strcmp(argv[i], "parent") == 0)
			pid = getppid();
		snprintf(label, sizeof label, "%s", argv[i]);
		probe(label, pid);
	}
	return 0;
}
