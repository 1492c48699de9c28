/* SPDX-License-Identifier: MIT */
/*
 * qcow2 compressed clusters: zlib (raw deflate, 4 KiB window, as the
 * specification's compression type 0) read and written, zstd read.
 */
#include "qcow2_priv.h"

#include <zlib.h>
#include <zstd.h>

static int inflate_cluster(const uint8_t *in, size_t in_len, uint8_t *out,
			   size_t out_len)
{
	z_stream z;
	int ret;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -12) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)in_len;
	z.next_out = out;
	z.avail_out = (uInt)out_len;
	ret = inflate(&z, Z_FINISH);
	/* The stored length is rounded up to sectors: trailing bytes past
	 * the stream's end are expected, a short output is not. */
	if ((ret != Z_STREAM_END && ret != Z_BUF_ERROR && ret != Z_OK) ||
	    z.avail_out) {
		inflateEnd(&z);
		return -EIO;
	}
	inflateEnd(&z);
	return 0;
}

static int zstd_cluster(const uint8_t *in, size_t in_len, uint8_t *out,
			size_t out_len)
{
	ZSTD_DStream *d = ZSTD_createDStream();
	ZSTD_inBuffer ib = { in, in_len, 0 };
	ZSTD_outBuffer ob = { out, out_len, 0 };
	int ret = 0;

	if (!d)
		return -ENOMEM;
	ZSTD_initDStream(d);
	/* The stream may be followed by padding: stop at a full cluster. */
	while (ob.pos < ob.size) {
		size_t r = ZSTD_decompressStream(d, &ob, &ib);

		if (ZSTD_isError(r)) {
			ret = -EIO;
			break;
		}
		if (r == 0 || ib.pos == ib.size) {
			if (ob.pos < ob.size)
				ret = -EIO;
			break;
		}
	}
	ZSTD_freeDStream(d);
	return ret;
}

int qcow2_decompress(const struct qcow2_state *s, const uint8_t *in,
		     size_t in_len, uint8_t *out, size_t out_len)
{
	if (s->h.compression_type == QCOW2_COMPRESSION_ZSTD)
		return zstd_cluster(in, in_len, out, out_len);
	return inflate_cluster(in, in_len, out, out_len);
}

int qcow2_compress(const uint8_t *in, size_t in_len, uint8_t *out,
		   size_t out_cap, size_t *out_len)
{
	z_stream z;
	int ret;

	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)in_len;
	z.next_out = out;
	z.avail_out = (uInt)out_cap;
	ret = deflate(&z, Z_FINISH);
	*out_len = out_cap - z.avail_out;
	deflateEnd(&z);
	/* Not smaller than the input: store the cluster uncompressed. */
	return ret == Z_STREAM_END ? 0 : -ENOSPC;
}
