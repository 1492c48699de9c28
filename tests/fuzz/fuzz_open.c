/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness: probe, open and read an image made of the fuzzer's
 * bytes (headers, block maps, VMDK descriptors and stream markers, VHD
 * parent locators, ...), read-only, through the public API.
 * Inputs that start with "SPARSEIMG" are a sparse image instead: records
 * of (u64 LE offset, u32 LE length, bytes), so that formats whose
 * metadata lies MiBs apart (VHDX: log at 1 MiB, metadata and BAT after)
 * fit in libFuzzer's 1 MiB inputs.
 * Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined.
 */
#include "img.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK (256u << 10)
#define MAX_READS 64

static char dir[] = "/tmp/fuzz-open-XXXXXX";
static char path[64];
static uint8_t *buf;

static void exercise(struct img *img)
{
	struct img_info *info = NULL;
	struct img_check_result res;
	uint64_t size = img_size(img), off = 0;

	if (img_get_info(img, &info) == 0)
		img_info_free(info);
	memset(&res, 0, sizeof(res));
	img_check(img, &res, 0);
	/* Walk the allocation map and read what it says is data, bounded. */
	for (int i = 0; i < MAX_READS && off < size; i++) {
		struct img_extent ext;
		if (img_block_status(img, off, size - off, &ext) < 0 ||
		    ext.length == 0)
			break;
		uint64_t n = ext.length < READ_CHUNK ? ext.length : READ_CHUNK;
		img_pread(img, buf, (size_t)n, off);
		/* jump through large extents so huge virtual sizes stay cheap */
		off += ext.length > (64u << 20) ? ext.length : n;
	}
	/* An unaligned read across the start. */
	if (size > 1000)
		img_pread(img, buf, 1000, 3);
}

/* The sparse encoding: records until the input ends; offsets and the
 * file stay below 64 MiB. */
static void write_sparse(int fd, const uint8_t *p, size_t n)
{
	while (n >= 12) {
		uint64_t off = 0;
		uint32_t len = 0;

		for (int i = 7; i >= 0; i--)
			off = off << 8 | p[i];
		for (int i = 11; i >= 8; i--)
			len = len << 8 | p[i];
		p += 12;
		n -= 12;
		if (len > n)
			len = (uint32_t)n;
		off %= 64u << 20;
		if (pwrite(fd, p, len, (off_t)off) < 0)
			abort();
		p += len;
		n -= len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const formats[] = { NULL, "vdi", "vhd", "vmdk",
					       "vhdx" };

	if (!buf) {
		if (!mkdtemp(dir))
			abort();
		snprintf(path, sizeof(path), "%s/image", dir);
		buf = malloc(READ_CHUNK);
		if (!buf)
			abort();
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		abort();
	if (size >= 9 && !memcmp(data, "SPARSEIMG", 9)) {
		write_sparse(fd, data + 9, size - 9);
	} else if (size && write(fd, data, size) != (ssize_t)size) {
		abort();
	}
	close(fd);

	for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
		char err[IMG_ERRMSG_MAX];
		struct img *img;
		struct img_open_options opts = {
			.format = formats[f],
			.flags = IMG_OPEN_RDONLY | IMG_OPEN_NO_LOCK,
		};
		if (img_open(&img, path, &opts, err, sizeof(err)) == 0) {
			exercise(img);
			img_close(img);
		} else if (err[0] == 0 || strchr(err, '\n')) {
			abort(); /* every failure has exactly one line */
		}
	}
	return 0;
}
