/* SPDX-License-Identifier: MIT */
/*
 * Test helper for tests/e2e/vmdk.sh: copies the guest contents of one
 * image into another, existing image through libimg, the way convert
 * does (ascending 1 MiB chunks, all-zero chunks skipped), so the VMDK
 * driver can be exercised before and independently of imgtool convert.
 *
 *   vmdk_copy [-s] [-f SRCFMT] [-F DSTFMT] [-n] SRC DST
 *     -s  open DST with IMG_OPEN_SEQUENTIAL (streamOptimized)
 *     -n  do not open SRC's backing chain
 *   vmdk_copy -w OFFSET FILE DST     write FILE's bytes into DST at OFFSET
 *   vmdk_copy -z OFFSET LEN DST      write_zeroes(MAY_UNMAP) on DST
 *   vmdk_copy -x OFFSET FILE DST     write, then _exit without flush/close
 *   vmdk_copy -r SIZE DST            img_resize (grow)
 *   vmdk_copy -c IMG                 sha256 of IMG's guest contents
 *   vmdk_copy -k FIX DST             img_check (FIX: 0, 1 leaks, 3 all);
 *                                    prints the counts and messages
 */
#include "img.h"

#include <errno.h>
#include <openssl/evp.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1u << 20)

static int open_or_die(struct img **img, const char *path, const char *fmt,
		       unsigned flags)
{
	struct img_open_options o = { .format = fmt, .flags = flags };
	char err[IMG_ERRMSG_MAX];

	if (img_open(img, path, &o, err, sizeof(err))) {
		fprintf(stderr, "vmdk_copy: %s\n", err);
		fflush(stderr);
		_exit(1);
	}
	return 0;
}

static int fail(struct img *img, const char *what)
{
	fprintf(stderr, "vmdk_copy: %s: %s\n", what, img_errmsg(img));
	fflush(stderr);
	_exit(1); /* a failed test program: no cleanup to check */
}

static int write_file(uint64_t off, const char *file, const char *dst)
{
	struct img *d;
	struct stat st;
	char *buf;
	int fd = open(file, O_RDONLY), ret;

	if (fd < 0 || fstat(fd, &st)) {
		perror(file);
		return 1;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf || read(fd, buf, (size_t)st.st_size) != st.st_size) {
		perror(file);
		return 1;
	}
	close(fd);
	open_or_die(&d, dst, NULL, IMG_OPEN_RDWR);
	if (img_pwrite(d, buf, (size_t)st.st_size, off))
		return fail(d, "write");
	ret = img_close(d);
	free(buf);
	return ret ? 1 : 0;
}

static int crash_write(uint64_t off, const char *file, const char *dst)
{
	struct img *d;
	char buf[1 << 16];
	ssize_t n;
	int fd = open(file, O_RDONLY);

	if (fd < 0) {
		perror(file);
		return 1;
	}
	open_or_die(&d, dst, NULL, IMG_OPEN_RDWR);
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		if (img_pwrite(d, buf, (size_t)n, off))
			return fail(d, "write");
		off += (uint64_t)n;
	}
	_exit(0);
}

static int resize(uint64_t size, const char *dst)
{
	struct img *d;

	open_or_die(&d, dst, NULL, IMG_OPEN_RDWR);
	if (img_resize(d, size, 0))
		return fail(d, "resize");
	return img_close(d) ? 1 : 0;
}

static int check(unsigned fix, const char *dst)
{
	struct img_check_result r;
	struct img *d;
	int i;

	memset(&r, 0, sizeof(r));
	open_or_die(&d, dst, NULL,
		    IMG_OPEN_CHECK | IMG_OPEN_NO_BACKING |
			    (fix ? IMG_OPEN_RDWR : 0));
	if (img_check(d, &r, fix))
		return fail(d, "check");
	for (i = 0; i < r.nmessages; i++)
		printf("msg: %s\n", r.messages[i]);
	printf("corruptions=%llu leaks=%llu fixed=%llu leaks_fixed=%llu "
	       "allocated=%llu\n",
	       (unsigned long long)r.corruptions, (unsigned long long)r.leaks,
	       (unsigned long long)r.corruptions_fixed,
	       (unsigned long long)r.leaks_fixed,
	       (unsigned long long)r.allocated_clusters);
	return img_close(d) ? 1 : 0;
}

static int hash(const char *path)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[32];
	unsigned int mdlen, i;
	struct img *d;
	uint64_t off, size;
	char *buf = malloc(4 * CHUNK);

	if (!ctx || !buf || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
		return 1;
	open_or_die(&d, path, NULL, IMG_OPEN_RDONLY);
	size = img_size(d);
	for (off = 0; off < size; off += 4 * CHUNK) {
		size_t n = size - off < 4 * CHUNK ? (size_t)(size - off)
						  : 4 * CHUNK;

		if (img_pread(d, buf, n, off))
			return fail(d, "read");
		EVP_DigestUpdate(ctx, buf, n);
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	for (i = 0; i < mdlen; i++)
		printf("%02x", md[i]);
	printf("\n");
	EVP_MD_CTX_free(ctx);
	free(buf);
	img_close(d);
	return 0;
}

static int zero_range(uint64_t off, uint64_t len, const char *dst)
{
	struct img *d;

	open_or_die(&d, dst, NULL, IMG_OPEN_RDWR);
	if (img_write_zeroes(d, off, len, IMG_ZERO_MAY_UNMAP))
		return fail(d, "write_zeroes");
	return img_close(d) ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *sfmt = NULL, *dfmt = NULL;
	unsigned dflags = IMG_OPEN_RDWR, sflags = IMG_OPEN_RDONLY;
	struct img *s, *d;
	uint64_t size, off;
	char *buf;
	int c;

	while ((c = getopt(argc, argv, "sf:F:nw:z:x:r:k:c:")) != -1) {
		switch (c) {
		case 's':
			dflags |= IMG_OPEN_SEQUENTIAL;
			break;
		case 'f':
			sfmt = optarg;
			break;
		case 'F':
			dfmt = optarg;
			break;
		case 'n':
			sflags |= IMG_OPEN_NO_BACKING;
			break;
		case 'w':
			if (argc - optind != 2)
				return 2;
			return write_file(strtoull(optarg, NULL, 0),
					  argv[optind], argv[optind + 1]);
		case 'z':
			if (argc - optind != 2)
				return 2;
			return zero_range(strtoull(optarg, NULL, 0),
					  strtoull(argv[optind], NULL, 0),
					  argv[optind + 1]);
		case 'x':
			if (argc - optind != 2)
				return 2;
			return crash_write(strtoull(optarg, NULL, 0),
					   argv[optind], argv[optind + 1]);
		case 'r':
			if (argc - optind != 1)
				return 2;
			return resize(strtoull(optarg, NULL, 0), argv[optind]);
		case 'c':
			return hash(optarg);
		case 'k':
			if (argc - optind != 1)
				return 2;
			return check((unsigned)atoi(optarg), argv[optind]);
		default:
			return 2;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, "usage: vmdk_copy [-s] [-f FMT] [-F FMT] SRC "
				"DST\n");
		return 2;
	}
	open_or_die(&s, argv[optind], sfmt, sflags);
	open_or_die(&d, argv[optind + 1], dfmt, dflags);
	size = img_size(s);
	if (img_size(d) < size) {
		fprintf(stderr, "vmdk_copy: destination is smaller\n");
		return 1;
	}
	buf = malloc(CHUNK);
	if (!buf)
		return 1;
	for (off = 0; off < size;) {
		size_t n = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
		struct img_extent ext;
		size_t i;

		/* Like convert: ranges that read as zero are not copied. */
		if (img_block_status(s, off, n, &ext))
			return fail(s, "block status");
		if (!(ext.flags & IMG_EXTENT_DATA) ||
		    (ext.flags & IMG_EXTENT_ZERO)) {
			off += ext.length;
			continue;
		}
		n = ext.length;

		if (img_pread(s, buf, n, off))
			return fail(s, "read");
		for (i = 0; i < n && !buf[i]; i++)
			;
		if (i == n) {
			off += n;
			continue;
		}
		if (img_pwrite(d, buf, n, off))
			return fail(d, "write");
		off += n;
	}
	free(buf);
	if (img_close(d)) {
		fprintf(stderr, "vmdk_copy: close failed\n");
		return 1;
	}
	img_close(s);
	return 0;
}
