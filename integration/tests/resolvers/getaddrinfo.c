/* getaddrinfo(3) as a program, built with musl-gcc: how an Alpine Pod resolves a name.
 * Prints the addresses of NAME, numeric, one per line; or, with exit status 2, the error's
 * symbolic name (so that tests can tell NXDOMAIN from a timeout) and its text. */
#include <netdb.h>
#include <stdio.h>
#include <sys/socket.h>

static const char *eai_name(int rc) {
    switch (rc) {
    case EAI_NONAME: return "EAI_NONAME";
    case EAI_AGAIN: return "EAI_AGAIN";
    case EAI_FAIL: return "EAI_FAIL";
    case EAI_NODATA: return "EAI_NODATA";
    case EAI_SYSTEM: return "EAI_SYSTEM";
    default: return "EAI_?";
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s NAME\n", argv[0]);
        return 64;
    }
    /* One socket type, or every address comes back once per type. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    int rc = getaddrinfo(argv[1], NULL, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "%s: %s (%s)\n", argv[1], eai_name(rc), gai_strerror(rc));
        return 2;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        char host[NI_MAXHOST];
        rc = getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, NULL, 0, NI_NUMERICHOST);
        if (rc != 0) {
            fprintf(stderr, "getnameinfo: %s\n", gai_strerror(rc));
            return 1;
        }
        puts(host);
    }
    freeaddrinfo(res);
    return 0;
}
