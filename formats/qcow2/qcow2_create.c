/* SPDX-License-Identifier: MIT */
/*
 * qcow2 create: header (with the feature-name table, the backing file and
 * its format), one refcount table, the refcount blocks that cover the
 * metadata, and an empty L1 table, laid out from cluster 0 in that order.
 */
#include "qcow2_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const qcow2_create_options[] = {
	"compat",	    "refcount_bits", "lazy_refcounts", "extended_l2",
	"compression_type", "preallocation", "subformat",      NULL,
};

static bool opt_on(const char *v)
{
	return v && (!strcmp(v, "on") || !strcmp(v, "true") ||
		     !strcmp(v, "yes") || !strcmp(v, "1"));
}

static int parse_options(const struct img_create_args *a,
			 struct qcow2_header *h, bool *ext_l2, char *errbuf,
			 size_t errlen)
{
	const char *compat = img_create_arg(a, "compat");
	const char *rb = img_create_arg(a, "refcount_bits");
	const char *lazy = img_create_arg(a, "lazy_refcounts");
	const char *ct = img_create_arg(a, "compression_type");
	const char *pre = img_create_arg(a, "preallocation");
	uint32_t cs = a->cluster_size ? a->cluster_size : 65536;

	if (!compat)
		compat = a->subformat;
	if (!compat)
		compat = img_create_arg(a, "subformat");
	h->version = 3;
	if (compat) {
		if (!strcmp(compat, "0.10") || !strcmp(compat, "v2"))
			h->version = 2;
		else if (strcmp(compat, "1.1") && strcmp(compat, "v3"))
			return img_error_buf(errbuf, errlen, -EINVAL,
					     "compat must be 0.10 or 1.1, not "
					     "'%s'",
					     compat);
	}
	if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "cluster size must be a power of two "
				     "from 512 B to 2 MiB");
	h->cluster_bits = (uint32_t)__builtin_ctz(cs);
	h->refcount_order = 4;
	if (rb) {
		char *end;
		unsigned long bits = strtoul(rb, &end, 10);

		if (*end || !bits || bits > 64 || (bits & (bits - 1)))
			return img_error_buf(errbuf, errlen, -EINVAL,
					     "refcount_bits must be a power of "
					     "two from 1 to 64");
		if (h->version < 3 && bits != 16)
			return img_error_buf(errbuf, errlen, -EINVAL,
					     "compat 0.10 has 16-bit refcounts "
					     "only");
		h->refcount_order = (uint32_t)__builtin_ctzl(bits);
	}
	if (opt_on(lazy)) {
		if (h->version < 3)
			return img_error_buf(errbuf, errlen, -EINVAL,
					     "lazy refcounts need compat 1.1");
		h->compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
	}
	*ext_l2 = opt_on(img_create_arg(a, "extended_l2"));
	if (*ext_l2) {
		if (h->version < 3)
			return img_error_buf(errbuf, errlen, -EINVAL,
					     "extended L2 entries need compat "
					     "1.1");
		if (cs < 16384)
			return img_error_buf(
				errbuf, errlen, -EINVAL,
				"extended L2 entries need clusters "
				"of at least 16 KiB");
		h->incompatible_features |= QCOW2_INCOMPAT_EXTL2;
	}
	if (ct && strcmp(ct, "zlib"))
		return img_error_buf(errbuf, errlen, -ENOTSUP,
				     "compression type '%s' is not supported "
				     "for writing (zlib is)",
				     ct);
	if ((pre && strcmp(pre, "off")) || a->preallocate)
		return img_error_buf(errbuf, errlen, -ENOTSUP,
				     "qcow2 preallocation is not supported");
	return 0;
}

int qcow2_create(const struct img_create_args *a, char *errbuf, size_t errlen)
{
	struct qcow2_state s;
	struct img_file f;
	uint64_t size = a->size, cs, l2_entries, l1_size, l1_clusters;
	uint64_t entries_per_block, rt = 1, rb = 1, total = 0;
	uint8_t *buf = NULL;
	size_t hlen;
	bool ext_l2 = false;
	int ret;

	memset(&s, 0, sizeof(s));
	ret = parse_options(a, &s.h, &ext_l2, errbuf, errlen);
	if (ret < 0)
		return ret;
	if (!size && a->backing)
		size = img_size(a->backing);
	if (size % 512)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "size must be a multiple of 512 bytes");
	if (size > (UINT64_C(1) << 56))
		return img_error_buf(errbuf, errlen, -EFBIG,
				     "size too large for qcow2");
	if (a->backing_file && strlen(a->backing_file) > QCOW2_MAX_BACKING_NAME)
		return img_error_buf(errbuf, errlen, -ENAMETOOLONG,
				     "backing file name too long");
	s.cluster_bits = s.h.cluster_bits;
	s.cluster_size = 1u << s.cluster_bits;
	cs = s.cluster_size;
	l2_entries = cs / (ext_l2 ? 16 : 8);
	l1_size = (size + l2_entries * cs - 1) / (l2_entries * cs);
	if (l1_size * 8 > QCOW2_MAX_L1_BYTES)
		return img_error_buf(errbuf, errlen, -EFBIG,
				     "size too large for this cluster size");
	l1_clusters = (l1_size * 8 + cs - 1) / cs;
	if (!l1_clusters)
		l1_clusters = 1;
	entries_per_block = (cs * 8) >> s.h.refcount_order;
	/* Metadata clusters, covered by refcount blocks that count
	 * themselves: iterate to the fixed point. */
	for (;;) {
		uint64_t t = 1 + rt + rb + l1_clusters;
		uint64_t nrb = (t + entries_per_block - 1) / entries_per_block;
		uint64_t nrt = (nrb * 8 + cs - 1) / cs;

		if (nrb == rb && nrt == rt) {
			total = t;
			break;
		}
		rb = nrb;
		rt = nrt;
	}
	s.h.size = size;
	s.h.l1_size = (uint32_t)l1_size;
	s.h.refcount_table_offset = cs;
	s.h.refcount_table_clusters = (uint32_t)rt;
	s.h.l1_table_offset = (1 + rt + rb) * cs;
	if (s.h.version >= 3) {
		s.h.header_length = 112;
		qcow2_feature_table_default(&s);
		if (!s.feature_table)
			return img_error_buf(errbuf, errlen, -ENOMEM,
					     "out of memory");
	}
	if (a->backing_file) {
		const char *fmt = a->backing_format;

		if (!fmt && a->backing)
			fmt = img_format(a->backing);
		snprintf(s.backing_name, sizeof(s.backing_name), "%s",
			 a->backing_file);
		if (fmt)
			snprintf(s.backing_format, sizeof(s.backing_format),
				 "%s", fmt);
	}

	buf = calloc(1, cs);
	if (!buf) {
		ret = img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
		goto out_free;
	}
	ret = qcow2_header_build(&s, buf, &hlen);
	if (ret < 0) {
		img_error_buf(errbuf, errlen, ret,
			      "the header and the backing file name do not fit "
			      "in one %llu-byte cluster",
			      (unsigned long long)cs);
		goto out_free;
	}
	ret = img_file_create(&f, a->path, a->excl, errbuf, errlen);
	if (ret < 0)
		goto out_free;
	ret = img_file_truncate(&f, total * cs);
	if (ret < 0)
		goto fail;
	ret = img_file_pwrite(&f, buf, hlen, 0);
	if (ret < 0)
		goto fail;
	/* Refcount table: entries for the rb blocks. */
	for (uint64_t i = 0; i < rt; i++) {
		memset(buf, 0, cs);
		for (uint64_t j = 0; j < cs / 8; j++) {
			uint64_t b = i * (cs / 8) + j;
			uint64_t v;

			if (b >= rb)
				break;
			v = IMG_BE64((1 + rt + b) * cs);
			memcpy(buf + j * 8, &v, 8);
		}
		ret = img_file_pwrite(&f, buf, cs, (1 + i) * cs);
		if (ret < 0)
			goto fail;
	}
	/* Refcount blocks: 1 for each of the total metadata clusters. */
	for (uint64_t b = 0; b < rb; b++) {
		memset(buf, 0, cs);
		for (uint64_t j = 0; j < entries_per_block; j++) {
			uint64_t c = b * entries_per_block + j;

			if (c >= total)
				break;
			qcow2_refblock_set(buf, s.h.refcount_order, j, 1);
		}
		ret = img_file_pwrite(&f, buf, cs, (1 + rt + b) * cs);
		if (ret < 0)
			goto fail;
	}
	ret = img_file_sync(&f);
	if (ret < 0)
		goto fail;
	img_file_close(&f);
	free(buf);
	free(s.feature_table);
	return 0;
fail:
	img_error_buf(errbuf, errlen, ret, "%s: cannot write: %s", a->path,
		      strerror(-ret));
	img_file_close(&f);
	unlink(a->path);
out_free:
	free(buf);
	free(s.feature_table);
	return ret;
}
