/* LD_PRELOAD shim: force wildcard bind() to loopback (xrootd has no listen-address directive,
 * slurmctld 22.05 binds 0.0.0.0 despite NoInAddrAny).
 * 0.0.0.0 -> 127.0.0.1 ; :: -> ::ffff:127.0.0.1 (dual-stack socket then only accepts IPv4 loopback).
 * Build: gcc -shared -fPIC -O2 -o bindlo.so bindlo.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t) = 0;
    if (!real_bind) real_bind = dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a; memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return real_bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a; memcpy(&a, addr, sizeof a);
        if (memcmp(&a.sin6_addr, &in6addr_any, sizeof(struct in6_addr)) == 0)
            inet_pton(AF_INET6, "::ffff:127.0.0.1", &a.sin6_addr);
        return real_bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    return real_bind(fd, addr, len);
}
