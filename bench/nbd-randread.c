/* SPDX-License-Identifier: MIT */
/*
 * nbd-randread URI COUNT INFLIGHT: COUNT 4 KiB reads at random aligned
 * offsets of an NBD export, INFLIGHT requests in flight (libnbd's
 * asynchronous API), then prints the rate.  Used by `make bench` against
 * `imgtool serve` and `qemu-nbd`.
 */
#include <inttypes.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define READ_SIZE 4096

struct slot {
	char buf[READ_SIZE];
	int64_t cookie;
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
	/* xorshift64*: deterministic, so both servers see the same offsets */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: nbd-randread URI COUNT INFLIGHT\n");
		return 2;
	}
	long count = atol(argv[2]), inflight = atol(argv[3]);
	if (count <= 0 || inflight <= 0 || inflight > 256) {
		fprintf(stderr, "nbd-randread: bad COUNT or INFLIGHT\n");
		return 2;
	}
	struct nbd_handle *nbd = nbd_create();
	if (!nbd || nbd_connect_uri(nbd, argv[1]) == -1) {
		fprintf(stderr, "nbd-randread: %s\n", nbd_get_error());
		return 1;
	}
	int64_t size = nbd_get_size(nbd);
	uint64_t blocks = (uint64_t)size / READ_SIZE;
	struct slot *slots = calloc((size_t)inflight, sizeof(*slots));
	if (!slots || blocks == 0) {
		fprintf(stderr,
			"nbd-randread: out of memory or empty export\n");
		return 1;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long issued = 0, done = 0;
	while (done < count) {
		for (long i = 0; i < inflight; i++) {
			if (slots[i].cookie > 0) {
				int r = nbd_aio_command_completed(
					nbd, slots[i].cookie);
				if (r == -1) {
					fprintf(stderr, "nbd-randread: %s\n",
						nbd_get_error());
					return 1;
				}
				if (r == 0)
					continue;
				slots[i].cookie = 0;
				done++;
			}
			if (issued < count) {
				uint64_t off =
					(rng_next() % blocks) * READ_SIZE;
				slots[i].cookie = nbd_aio_pread(
					nbd, slots[i].buf, READ_SIZE, off,
					NBD_NULL_COMPLETION, 0);
				if (slots[i].cookie == -1) {
					fprintf(stderr, "nbd-randread: %s\n",
						nbd_get_error());
					return 1;
				}
				issued++;
			}
		}
		if (done < count && nbd_poll(nbd, -1) == -1) {
			fprintf(stderr, "nbd-randread: %s\n", nbd_get_error());
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) +
		      (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%ld reads of %d bytes in %.3f s: %.0f IOPS\n", count, READ_SIZE,
	       secs, (double)count / secs);
	nbd_shutdown(nbd, 0);
	nbd_close(nbd);
	free(slots);
	return 0;
}
