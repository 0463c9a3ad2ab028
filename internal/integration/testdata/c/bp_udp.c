/* bp_udp IP PORT: every socket that could carry traffic around Tor. Expected under torsocks: UDP
 * sockets are created inside torsocks' UDP sandbox (a datagram sent from them, here to IP:9999,
 * must never arrive: the test's UDP canary listens there); every other kind is refused (EPERM;
 * other address families refused too); plain TCP still works. */
#include "bp_common.c"
#include <linux/if_ether.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

static struct sockaddr_storage dest;
static socklen_t dlen;

#define SANDBOXED (-1)

static void try(const char *what, int domain, int type, int proto, int want)
{
	int fd = socket(domain, type, proto);
	int e = errno;
	if (fd >= 0 && want == SANDBOXED) {
		struct sockaddr_storage u = dest;
		if (u.ss_family == AF_INET)
			((struct sockaddr_in *)&u)->sin_port = htons(9999);
		else
			((struct sockaddr_in6 *)&u)->sin6_port = htons(9999);
		long s = sendto(fd, "leak", 4, 0, (struct sockaddr *)&u, dlen);
		check(1, "%s socket=%d sandboxed sendto=%ld", what, fd, s);
		close(fd);
		return;
	}
	if (fd >= 0) {
		/* Created: show that it can send, so the failure is loud. */
		long s = sendto(fd, "leak", 4, 0, (struct sockaddr *)&dest, dlen);
		check(0, "%s socket=%d sendto=%ld", what, fd, s);
		close(fd);
		return;
	}
	check(want ? e == want : 1, "%s socket=-1 errno=%s", what, errname(e));
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	bounded(30);
	dlen = parse_dest(argv[1], argv[2], &dest);
	try("udp4", AF_INET, SOCK_DGRAM, 0, SANDBOXED);
	try("udp4-cloexec-nonblock", AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_UDP, SANDBOXED);
	try("udp6", AF_INET6, SOCK_DGRAM, 0, SANDBOXED);
	try("udplite4", AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE, EPERM);
	try("icmp4-dgram", AF_INET, SOCK_DGRAM, IPPROTO_ICMP, EPERM);
	try("icmp6-dgram", AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6, EPERM);
	try("raw4-icmp", AF_INET, SOCK_RAW, IPPROTO_ICMP, EPERM);
	try("raw4-tcp", AF_INET, SOCK_RAW, IPPROTO_TCP, EPERM);
	try("raw6", AF_INET6, SOCK_RAW, IPPROTO_ICMPV6, EPERM);
	try("packet-raw", AF_PACKET, SOCK_RAW, htons(ETH_P_ALL), EPERM);
	try("packet-dgram", AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP), EPERM);
	try("sctp4-stream", AF_INET, SOCK_STREAM, IPPROTO_SCTP, EPERM);
	try("sctp4-seqpacket", AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP, EPERM);
	try("sctp6-stream", AF_INET6, SOCK_STREAM, IPPROTO_SCTP, EPERM);
	try("mptcp4", AF_INET, SOCK_STREAM, IPPROTO_MPTCP, EPERM);
	try("dccp4", AF_INET, SOCK_DCCP, IPPROTO_DCCP, EPERM);
	/* Other families: refused, whatever the errno. */
	try("vsock-stream", AF_VSOCK, SOCK_STREAM, 0, 0);
	try("vsock-dgram", AF_VSOCK, SOCK_DGRAM, 0, 0);
	try("ax25", AF_AX25, SOCK_DGRAM, 0, 0);
	try("appletalk", AF_APPLETALK, SOCK_DGRAM, 0, 0);
	/* TCP must still work. */
	int fd = tcp_connect(&dest, dlen);
	int body = fd >= 0 && http_get(fd);
	check(body, "tcp connect=%d body=%s", fd >= 0 ? 0 : -1, body ? "canary" : "missing");
	return failures ? 1 : 0;
}
