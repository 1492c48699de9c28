/* SPDX-License-Identifier: MIT */
/*
 * qcow2 (QEMU copy-on-write v2/v3): open, the data path, commit order.
 *
 * Tables are kept in memory: the L1 table whole, L2 tables as they are
 * first used.  Writes change them in memory; data goes to the file at
 * once.
 *
 * Commit order (flush, close): data is synced, then refcounts (new
 * blocks, a grown table and the header that switches to it), then L2
 * tables, then the L1 table (a moved one and its header), each step
 * synced before the next; only then are clusters the old tables referenced
 * released.  A crash at any point leaves tables that point only at
 * clusters whose data and refcounts are on disk: at worst leaked clusters,
 * which `check -r leaks` reclaims.
 *
 * Parallel requests (img_set_parallel_rw, unless writes are compressed):
 * reads, and writes into clusters this image owns (COPIED, not
 * compressed, wholly allocated), go to the file at once under no lock but
 * layout_lock held shared.  Everything else a write does (an L2 table
 * allocated or copied, fresh clusters allocated and their refcounts set,
 * the old contents of the first and last cluster read, the L2 entries
 * updated) holds meta_lock, and the lookup is made again under it, so two
 * writers never allocate one cluster twice.  A new entry is stored only
 * after its cluster's data is written.  A flush commits under meta_lock
 * and runs its last fdatasync without it; when it releases clusters that
 * replaced entries pointed at, it first waits for every request
 * (layout_lock exclusive), as a reader may still be reading one.
 * Compressed writes stay serial (the core's exclusive lock).
 */
#include "qcow2_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum qcow2_kind {
	QCOW2_UNALLOCATED,
	QCOW2_ZERO,
	QCOW2_DATA,
	QCOW2_COMPRESSED,
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t qmin(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

int qcow2_sync(struct img *img, struct qcow2_state *s)
{
	int ret = img_file_sync(&s->file);

	if (ret < 0) {
		__atomic_store_n(&s->sync_failed, true, __ATOMIC_RELEASE);
		return img_error(img, ret, "cannot flush: %s", strerror(-ret));
	}
	return 0;
}

void qcow2_compressed_range(const struct qcow2_state *s, uint64_t entry,
			    uint64_t *off, uint64_t *len)
{
	unsigned x = 62 - (s->cluster_bits - 8);
	uint64_t host = entry & ((UINT64_C(1) << x) - 1);
	uint64_t sectors =
		((entry & ~QCOW2_OFLAG_COPIED & ~QCOW2_OFLAG_COMPRESSED) >> x) +
		1;

	*off = host;
	*len = sectors * 512 - (host & 511);
}

static const char *feature_name(const struct qcow2_state *s, unsigned type,
				unsigned bit, char *buf, size_t len)
{
	for (uint32_t i = 0;
	     i + QCOW2_FEATURE_ENTRY_SIZE <= s->feature_table_len;
	     i += QCOW2_FEATURE_ENTRY_SIZE) {
		const uint8_t *e = s->feature_table + i;

		if (e[0] == type && e[1] == bit) {
			snprintf(buf, len, "%.46s", (const char *)e + 2);
			return buf;
		}
	}
	snprintf(buf, len, "unknown feature bit %u", bit);
	return buf;
}

/* ---- header ----------------------------------------------------------- */

static void put_ext(uint8_t *buf, size_t *pos, uint32_t type, const void *data,
		    uint32_t len)
{
	uint32_t t = IMG_BE32(type), l = IMG_BE32(len);

	memcpy(buf + *pos, &t, 4);
	memcpy(buf + *pos + 4, &l, 4);
	memcpy(buf + *pos + 8, data, len);
	*pos += 8 + ((len + 7) & ~7u);
}

/* Cluster 0 as it should be: the header, its extensions and the backing
 * file name (buf holds cluster_size bytes; *len gets the bytes used). */
int qcow2_header_build(struct qcow2_state *s, uint8_t *buf, size_t *len)
{
	size_t cap = s->cluster_size, pos;
	size_t bl = strlen(s->backing_name), fl = strlen(s->backing_format),
	       dl = strlen(s->data_file_name);
	size_t hl = s->h.version >= 3 ? s->h.header_length
				      : QCOW2_V2_HEADER_SIZE;
	size_t need = hl + 8 + ((fl + 7) & ~7u) + 8 + ((dl + 7) & ~7u) + 8 +
		      s->feature_table_len + s->other_exts_len + 8 + bl;
	struct qcow2_header_disk d;
	uint32_t table_len = s->h.version >= 3 ? s->feature_table_len : 0;

	/* The feature-name table is optional: left out when it does not
	 * fit (512-byte clusters). */
	if (need > cap) {
		need -= s->feature_table_len + 8;
		table_len = 0;
	}
	if (need > cap)
		return -ENOSPC;
	memset(buf, 0, cap);
	pos = hl;
	if (fl && bl)
		put_ext(buf, &pos, QCOW2_EXT_BACKING_FORMAT, s->backing_format,
			(uint32_t)fl);
	if (dl)
		put_ext(buf, &pos, QCOW2_EXT_DATA_FILE, s->data_file_name,
			(uint32_t)dl);
	if (table_len)
		put_ext(buf, &pos, QCOW2_EXT_FEATURE_TABLE, s->feature_table,
			table_len);
	if (s->other_exts_len)
		memcpy(buf + pos, s->other_exts, s->other_exts_len);
	pos += s->other_exts_len;
	pos += 8; /* end of extensions */
	s->h.backing_file_offset = bl ? pos : 0;
	s->h.backing_file_size = (uint32_t)bl;
	if (bl)
		memcpy(buf + pos, s->backing_name, bl);
	pos += bl;
	qcow2_header_encode(&d, &s->h);
	memcpy(buf, &d, qmin(hl, sizeof(d)));
	*len = pos;
	return 0;
}

int qcow2_header_write(struct img *img, struct qcow2_state *s)
{
	uint8_t *buf = malloc(s->cluster_size);
	size_t len;
	int ret;

	if (!buf)
		return img_error(img, -ENOMEM, "out of memory");
	ret = qcow2_header_build(s, buf, &len);
	if (ret < 0) {
		free(buf);
		return img_error(img, ret,
				 "the header, its extensions and the backing "
				 "file name do not fit in the first cluster");
	}
	ret = img_file_pwrite(&s->file, buf, len, 0);
	free(buf);
	if (ret < 0)
		return img_error(img, ret, "cannot write the header: %s",
				 strerror(-ret));
	s->header_dirty = false;
	return 0;
}

/* Parse the extensions between the header and the end of cluster 0. */
static int parse_extensions(struct img *img, struct qcow2_state *s,
			    const uint8_t *c0, bool *crypto)
{
	size_t pos = s->h.version >= 3 ? s->h.header_length
				       : QCOW2_V2_HEADER_SIZE;
	size_t end = s->cluster_size;

	if (s->h.backing_file_offset && s->h.backing_file_offset < end)
		end = (size_t)s->h.backing_file_offset;
	while (pos + 8 <= end) {
		uint32_t type, len;
		size_t next;

		memcpy(&type, c0 + pos, 4);
		memcpy(&len, c0 + pos + 4, 4);
		type = IMG_BE32(type);
		len = IMG_BE32(len);
		if (type == QCOW2_EXT_END)
			return 0;
		next = pos + 8 + (((size_t)len + 7) & ~(size_t)7);
		if (len > end || next > end)
			return img_error(img, -EINVAL,
					 "header extension 0x%08x runs past "
					 "the first cluster",
					 type);
		switch (type) {
		case QCOW2_EXT_BACKING_FORMAT:
			if (len >= sizeof(s->backing_format))
				return img_error(
					img, -EINVAL,
					"backing format name too long");
			memcpy(s->backing_format, c0 + pos + 8, len);
			s->backing_format[len] = 0;
			break;
		case QCOW2_EXT_FEATURE_TABLE:
			free(s->feature_table);
			s->feature_table = malloc(len ? len : 1);
			if (!s->feature_table)
				return img_error(img, -ENOMEM, "out of memory");
			memcpy(s->feature_table, c0 + pos + 8, len);
			s->feature_table_len = len;
			break;
		case QCOW2_EXT_DATA_FILE:
			if (len >= sizeof(s->data_file_name))
				return img_error(img, -EINVAL,
						 "data file name too long");
			memcpy(s->data_file_name, c0 + pos + 8, len);
			s->data_file_name[len] = 0;
			break;
		case QCOW2_EXT_CRYPTO:
			*crypto = true;
			__attribute__((fallthrough));
		default: {
			uint8_t *o = realloc(s->other_exts,
					     s->other_exts_len + (next - pos));
			if (!o)
				return img_error(img, -ENOMEM, "out of memory");
			memcpy(o + s->other_exts_len, c0 + pos, next - pos);
			s->other_exts = o;
			s->other_exts_len += (uint32_t)(next - pos);
			break;
		}
		}
		pos = next;
	}
	return 0;
}

/* The standard names, written into images we create. */
void qcow2_feature_table_default(struct qcow2_state *s)
{
	static const struct {
		uint8_t type, bit;
		const char *name;
	} names[] = {
		{ QCOW2_FEATURE_INCOMPAT, 0, "dirty bit" },
		{ QCOW2_FEATURE_INCOMPAT, 1, "corrupt bit" },
		{ QCOW2_FEATURE_INCOMPAT, 2, "external data file" },
		{ QCOW2_FEATURE_INCOMPAT, 3, "compression type" },
		{ QCOW2_FEATURE_INCOMPAT, 4, "extended L2 entries" },
		{ QCOW2_FEATURE_COMPAT, 0, "lazy refcounts" },
		{ QCOW2_FEATURE_AUTOCLEAR, 0, "bitmaps" },
		{ QCOW2_FEATURE_AUTOCLEAR, 1, "raw external data" },
	};
	size_t n = sizeof(names) / sizeof(names[0]);

	free(s->feature_table);
	s->feature_table = calloc(n, QCOW2_FEATURE_ENTRY_SIZE);
	s->feature_table_len = 0;
	if (!s->feature_table)
		return;
	for (size_t i = 0; i < n; i++) {
		uint8_t *e = s->feature_table + i * QCOW2_FEATURE_ENTRY_SIZE;

		e[0] = names[i].type;
		e[1] = names[i].bit;
		memcpy(e + 2, names[i].name, strlen(names[i].name));
	}
	s->feature_table_len = (uint32_t)(n * QCOW2_FEATURE_ENTRY_SIZE);
}

/* ---- open, close ------------------------------------------------------ */

static int qcow2_probe(const uint8_t *head, size_t head_len, uint64_t file_size,
		       struct img_file *f)
{
	uint32_t magic, version;

	(void)file_size;
	(void)f;
	if (head_len < 8)
		return 0;
	memcpy(&magic, head, 4);
	memcpy(&version, head + 4, 4);
	if (IMG_BE32(magic) != QCOW2_MAGIC)
		return 0;
	version = IMG_BE32(version);
	return version == 2 || version == 3 ? 100 : 0;
}

static void qcow2_close(struct img *img)
{
	struct qcow2_state *s = img_state(img);

	if (s->l2) {
		for (uint32_t i = 0; i < s->h.l1_size; i++)
			free(s->l2[i]);
	}
	free(s->l2);
	free(s->l2_dirty);
	free(s->l1);
	s->l1 = NULL;
	s->l2 = NULL;
	s->l2_dirty = NULL;
	qcow2_refs_free(s);
	qcow2_snapshots_free(s);
	free(s->feature_table);
	free(s->other_exts);
	free(s->zero_cluster);
	free(s->pend_buf);
	s->pend_buf = NULL;
	s->feature_table = s->other_exts = s->zero_cluster = NULL;
	if (s->has_ext_data)
		img_file_close(&s->ext_data);
	s->has_ext_data = false;
	img_file_close(&s->file);
	pthread_mutex_destroy(&s->meta_lock);
	pthread_rwlock_destroy(&s->layout_lock);
}

static void qcow2_locks_init(struct qcow2_state *s)
{
	pthread_mutexattr_t ma;
	pthread_rwlockattr_t ra;

	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&s->meta_lock, &ma);
	pthread_mutexattr_destroy(&ma);
	/* a flush waiting for it is not starved by a stream of requests */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(
		&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->layout_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
}

static int validate_header(struct img *img, struct qcow2_state *s,
			   uint64_t file_size)
{
	const struct qcow2_header *h = &s->h;
	uint64_t l2_span, need_l1;

	if (h->version != 2 && h->version != 3)
		return img_error(img, -ENOTSUP,
				 "qcow2 version %u is not supported",
				 h->version);
	if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
	    h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return img_error(img, -EINVAL,
				 "cluster size 2^%u is outside 512 B..2 MiB",
				 h->cluster_bits);
	if (h->version >= 3 &&
	    (h->header_length < QCOW2_V3_HEADER_SIZE || h->header_length % 8 ||
	     h->header_length > s->cluster_size))
		return img_error(img, -EINVAL, "header length %u is invalid",
				 h->header_length);
	if (h->refcount_order > 6)
		return img_error(img, -EINVAL,
				 "refcount width 2^%u bits is invalid",
				 h->refcount_order);
	if (h->crypt_method == QCOW2_CRYPT_LUKS)
		return img_error(img, -ENOTSUP,
				 "LUKS-encrypted qcow2 images are not "
				 "supported");
	if (h->crypt_method)
		return img_error(img, -ENOTSUP,
				 "AES-encrypted qcow2 images are not "
				 "supported (the legacy scheme is insecure)");
	if (h->size > (UINT64_C(1) << 61))
		return img_error(img, -EINVAL, "virtual size %llu is too large",
				 (unsigned long long)h->size);
	l2_span = (uint64_t)s->l2_entries << s->cluster_bits;
	need_l1 = (h->size + l2_span - 1) / l2_span;
	if (h->l1_size < need_l1)
		return img_error(img, -EINVAL,
				 "L1 table has %u entries, the size needs %llu",
				 h->l1_size, (unsigned long long)need_l1);
	if ((uint64_t)h->l1_size * 8 > QCOW2_MAX_L1_BYTES)
		return img_error(img, -EFBIG,
				 "L1 table of %u entries is too "
				 "large",
				 h->l1_size);
	if (h->l1_size &&
	    (h->l1_table_offset % s->cluster_size || !h->l1_table_offset ||
	     h->l1_table_offset + (uint64_t)h->l1_size * 8 > file_size))
		return img_error(img, -EINVAL, "L1 table at %llu lies %s",
				 (unsigned long long)h->l1_table_offset,
				 h->l1_table_offset % s->cluster_size
					 ? "at an unaligned offset"
					 : "past the end of the file");
	if (!h->refcount_table_clusters ||
	    h->refcount_table_offset % s->cluster_size ||
	    !h->refcount_table_offset ||
	    ((uint64_t)h->refcount_table_clusters << s->cluster_bits) >
		    QCOW2_MAX_REFTABLE_BYTES * 4 ||
	    h->refcount_table_offset + ((uint64_t)h->refcount_table_clusters
					<< s->cluster_bits) >
		    file_size)
		return img_error(img, -EINVAL,
				 "refcount table (%u clusters at %llu) lies "
				 "outside the file or is misaligned",
				 h->refcount_table_clusters,
				 (unsigned long long)h->refcount_table_offset);
	if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
		return img_error(img, -EINVAL,
				 "snapshot count %u is absurd (at most %u)",
				 h->nb_snapshots, QCOW2_MAX_SNAPSHOTS);
	if (h->nb_snapshots && (h->snapshots_offset % s->cluster_size ||
				h->snapshots_offset >= file_size))
		return img_error(img, -EINVAL,
				 "snapshot table at %llu lies outside the "
				 "file or is misaligned",
				 (unsigned long long)h->snapshots_offset);
	if (h->backing_file_offset &&
	    (h->backing_file_size > QCOW2_MAX_BACKING_NAME ||
	     h->backing_file_offset + h->backing_file_size > s->cluster_size))
		return img_error(img, -EINVAL,
				 "backing file name (%u bytes at %llu) lies "
				 "outside the first cluster",
				 h->backing_file_size,
				 (unsigned long long)h->backing_file_offset);
	if (h->compression_type != QCOW2_COMPRESSION_ZLIB &&
	    h->compression_type != QCOW2_COMPRESSION_ZSTD)
		return img_error(img, -ENOTSUP,
				 "compression type %u is not supported",
				 h->compression_type);
	return 0;
}

static int check_features(struct img *img, struct qcow2_state *s, bool writable,
			  bool checking)
{
	uint64_t unknown = s->h.incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
	char name[64];

	if (unknown) {
		unsigned bit = (unsigned)__builtin_ctzll(unknown);

		return img_error(
			img, -ENOTSUP,
			"unsupported incompatible feature: %s (bit %u)",
			feature_name(s, QCOW2_FEATURE_INCOMPAT, bit, name,
				     sizeof(name)),
			bit);
	}
	if ((s->h.incompatible_features & QCOW2_INCOMPAT_COMPRESSION) &&
	    s->h.compression_type == QCOW2_COMPRESSION_ZLIB)
		return img_error(img, -EINVAL,
				 "compression-type feature set with zlib");
	if (!(s->h.incompatible_features & QCOW2_INCOMPAT_COMPRESSION) &&
	    s->h.compression_type != QCOW2_COMPRESSION_ZLIB)
		return img_error(img, -EINVAL,
				 "compression type set without its feature "
				 "bit");
	if (writable && !checking &&
	    (s->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT))
		return img_error(img, -EROFS,
				 "the image is marked corrupt: open it "
				 "read-only or repair it with check -r all");
	if (writable && (s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE))
		return img_error(img, -ENOTSUP,
				 "writing qcow2 images with an external data "
				 "file is not supported (open read-only)");
	if ((s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) &&
	    !s->data_file_name[0])
		return img_error(img, -EINVAL,
				 "the external data file feature is set but "
				 "the image names no data file");
	return 0;
}

static int l1_load(struct img *img, struct qcow2_state *s)
{
	uint32_t n = s->h.l1_size ? s->h.l1_size : 1;
	int ret;

	s->l1 = calloc(n, 8);
	s->l2 = calloc(n, sizeof(*s->l2));
	s->l2_dirty = calloc(n, 1);
	if (!s->l1 || !s->l2 || !s->l2_dirty)
		return img_error(img, -ENOMEM,
				 "out of memory for the L1 table");
	if (!s->h.l1_size)
		return 0;
	ret = img_file_pread(&s->file, s->l1, (size_t)s->h.l1_size * 8,
			     s->h.l1_table_offset);
	if (ret < 0)
		return img_error(img, ret, "cannot read the L1 table: %s",
				 strerror(-ret));
	for (uint32_t i = 0; i < s->h.l1_size; i++)
		s->l1[i] = IMG_BE64(s->l1[i]);
	return 0;
}

static int open_data_file(struct img *img, struct qcow2_state *s)
{
	char path[4096];
	int ret;

	if (s->data_file_name[0] == '/')
		snprintf(path, sizeof(path), "%s", s->data_file_name);
	else
		snprintf(path, sizeof(path), "%s/%s", img_dirname(img),
			 s->data_file_name);
	ret = img_file_open(img, &s->ext_data, path, false);
	if (ret < 0)
		return ret;
	s->has_ext_data = true;
	s->data = &s->ext_data;
	return 0;
}

static int qcow2_open(struct img *img)
{
	struct qcow2_state *s = img_state(img);
	unsigned flags = img_open_flags(img);
	bool writable = flags & IMG_OPEN_RDWR;
	bool checking = flags & IMG_OPEN_CHECK;
	struct qcow2_header_disk d;
	bool crypto = false;
	uint8_t *c0 = NULL;
	uint64_t file_size;
	int ret;

	qcow2_locks_init(s);
	s->data = &s->file;
	s->writable = writable;
	s->compress = writable && (flags & IMG_OPEN_COMPRESS);
	s->pend_vc = UINT64_MAX;
	ret = img_file_open(img, &s->file, img_filename(img), writable);
	if (ret < 0) {
		pthread_mutex_destroy(&s->meta_lock);
		pthread_rwlock_destroy(&s->layout_lock);
		return ret;
	}
	ret = img_file_size(&s->file, &file_size);
	if (ret < 0)
		goto fail;
	s->file_size = file_size;
	ret = img_file_pread_zero_eof(&s->file, &d, sizeof(d), 0);
	if (ret < 0) {
		img_error(img, ret, "cannot read the header: %s",
			  strerror(-ret));
		goto fail;
	}
	if (IMG_BE32(d.magic) != QCOW2_MAGIC) {
		ret = img_error(img, -EINVAL, "not a qcow2 image (bad magic)");
		goto fail;
	}
	qcow2_header_decode(&s->h, &d);
	if (s->h.cluster_bits >= QCOW2_MIN_CLUSTER_BITS &&
	    s->h.cluster_bits <= QCOW2_MAX_CLUSTER_BITS) {
		s->cluster_bits = s->h.cluster_bits;
		s->cluster_size = 1u << s->cluster_bits;
	} else {
		s->cluster_bits = QCOW2_MIN_CLUSTER_BITS;
		s->cluster_size = 512;
	}
	s->l2_words = (s->h.incompatible_features & QCOW2_INCOMPAT_EXTL2) ? 2
									  : 1;
	s->l2_entries = s->cluster_size / (8 * s->l2_words);
	s->subcluster_size = s->l2_words == 2
				     ? s->cluster_size / QCOW2_SUBCLUSTERS
				     : s->cluster_size;
	ret = validate_header(img, s, file_size);
	if (ret < 0)
		goto fail;
	if (s->l2_words == 2 && s->cluster_bits < 14) {
		ret = img_error(img, -EINVAL,
				"extended L2 entries need clusters of at "
				"least 16 KiB");
		goto fail;
	}
	c0 = calloc(1, s->cluster_size);
	if (!c0) {
		ret = img_error(img, -ENOMEM, "out of memory");
		goto fail;
	}
	ret = img_file_pread_zero_eof(&s->file, c0, s->cluster_size, 0);
	if (ret < 0)
		goto fail;
	ret = parse_extensions(img, s, c0, &crypto);
	if (ret < 0)
		goto fail;
	if (crypto) {
		ret = img_error(img, -ENOTSUP,
				"encrypted qcow2 images are not supported");
		goto fail;
	}
	if (s->h.backing_file_offset && s->h.backing_file_size) {
		memcpy(s->backing_name, c0 + s->h.backing_file_offset,
		       s->h.backing_file_size);
		s->backing_name[s->h.backing_file_size] = 0;
		if (strlen(s->backing_name) != s->h.backing_file_size) {
			ret = img_error(
				img, -EINVAL,
				"backing file name contains a NUL byte");
			goto fail;
		}
	}
	ret = check_features(img, s, writable, checking);
	if (ret < 0)
		goto fail;
	if (s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
		ret = open_data_file(img, s);
		if (ret < 0)
			goto fail;
	}
	ret = l1_load(img, s);
	if (ret < 0)
		goto fail;
	if (writable || checking) {
		ret = qcow2_refs_load(img, s);
		if (ret < 0)
			goto fail;
	}
	ret = qcow2_snapshots_load(img, s);
	if (ret < 0 && !checking)
		goto fail;
	s->zero_cluster = calloc(1, s->cluster_size);
	if (!s->zero_cluster) {
		ret = img_error(img, -ENOMEM, "out of memory");
		goto fail;
	}
	if (writable && !checking &&
	    (s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
		/* Lazy refcounts were in use when the image was last
		 * written: rebuild them before anything is allocated. */
		ret = qcow2_dirty_repair(img, s);
		if (ret < 0)
			goto fail;
	}
	if (writable &&
	    (s->h.autoclear_features & ~QCOW2_AUTOCLEAR_DATA_FILE_RAW)) {
		/* Autoclear features (bitmaps, and any we do not know) are
		 * not kept up to date by us: clearing the bits tells readers
		 * their data is stale, as the specification asks. */
		s->h.autoclear_features &= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
		ret = qcow2_header_write(img, s);
		if (ret >= 0)
			ret = qcow2_sync(img, s);
		if (ret < 0)
			goto fail;
	}
	free(c0);
	img_set_parallel_rw(img, !s->compress);
	img_set_size(img, s->h.size);
	if (s->backing_name[0])
		img_add_backing_candidate(
			img, s->backing_name,
			s->backing_format[0] ? s->backing_format : NULL);
	return 0;
fail:
	free(c0);
	qcow2_close(img);
	return ret;
}

/* ---- tables ----------------------------------------------------------- */

static int l2_read(struct img *img, struct qcow2_state *s, uint32_t l1i,
		   uint64_t **out)
{
	uint64_t e = s->l1[l1i], off = e & QCOW2_OFFSET_MASK;
	uint64_t *t;
	int ret;

	if (off % s->cluster_size || off + s->cluster_size > s->file_size ||
	    off < s->cluster_size)
		return img_error(img, -EINVAL,
				 "L1 entry %u points %s (L2 table at %llu)",
				 l1i,
				 off % s->cluster_size
					 ? "at an unaligned offset"
					 : "outside the file",
				 (unsigned long long)off);
	t = malloc(s->cluster_size);
	if (!t)
		return img_error(img, -ENOMEM, "out of memory for an L2 table");
	ret = img_file_pread(&s->file, t, s->cluster_size, off);
	if (ret < 0) {
		free(t);
		return img_error(img, ret, "cannot read L2 table %u: %s", l1i,
				 strerror(-ret));
	}
	for (uint32_t i = 0; i < s->cluster_size / 8; i++)
		t[i] = IMG_BE64(t[i]);
	*out = t;
	return 0;
}

static uint64_t l1_get(const struct qcow2_state *s, uint32_t l1i)
{
	return __atomic_load_n(&s->l1[l1i], __ATOMIC_ACQUIRE);
}

static uint64_t l2_get(const uint64_t *t, size_t i)
{
	return __atomic_load_n(&t[i], __ATOMIC_ACQUIRE);
}

int qcow2_l2_load(struct img *img, struct qcow2_state *s, uint32_t l1i,
		  uint64_t **out)
{
	uint64_t *t = NULL;
	int ret = 0;

	*out = NULL;
	if (l1i >= s->h.l1_size || !(l1_get(s, l1i) & QCOW2_OFFSET_MASK))
		return 0;
	*out = __atomic_load_n(&s->l2[l1i], __ATOMIC_ACQUIRE);
	if (*out)
		return 0;
	pthread_mutex_lock(&s->meta_lock);
	if (!s->l2[l1i]) {
		ret = l2_read(img, s, l1i, &t);
		if (ret >= 0)
			__atomic_store_n(&s->l2[l1i], t, __ATOMIC_RELEASE);
	}
	*out = s->l2[l1i];
	pthread_mutex_unlock(&s->meta_lock);
	return ret;
}

/* The L2 table for l1i, made writable: allocated when missing, copied
 * when shared with a snapshot.  meta_lock held (or no parallel request). */
int qcow2_l2_for_write(struct img *img, struct qcow2_state *s, uint32_t l1i,
		       uint64_t **out)
{
	uint64_t e = s->l1[l1i], c;
	uint64_t *t;
	int ret;

	if (!(e & QCOW2_OFFSET_MASK)) {
		t = calloc(1, s->cluster_size);
		if (!t)
			return img_error(img, -ENOMEM, "out of memory");
		ret = qcow2_alloc_clusters(img, s, 1, &c);
		if (ret < 0) {
			free(t);
			return ret;
		}
		free(s->l2[l1i]);
		__atomic_store_n(&s->l2[l1i], t, __ATOMIC_RELEASE);
	} else {
		ret = qcow2_l2_load(img, s, l1i, &t);
		if (ret < 0)
			return ret;
		if (e & QCOW2_OFLAG_COPIED) {
			*out = t;
			return 0;
		}
		ret = qcow2_alloc_clusters(img, s, 1, &c);
		if (ret >= 0)
			ret = qcow2_free_later(img, s, e & QCOW2_OFFSET_MASK,
					       s->cluster_size);
		if (ret < 0)
			return ret;
		/* The data stays shared with the old table's owner. */
		for (uint32_t j = 0; j < s->l2_entries; j++)
			__atomic_fetch_and(&t[j * s->l2_words],
					   ~QCOW2_OFLAG_COPIED,
					   __ATOMIC_RELEASE);
	}
	__atomic_store_n(&s->l1[l1i],
			 (c << s->cluster_bits) | QCOW2_OFLAG_COPIED,
			 __ATOMIC_RELEASE);
	s->l1_dirty = true;
	s->l2_dirty[l1i] = 1;
	*out = t;
	return 0;
}

/* ---- lookup ----------------------------------------------------------- */

struct qcow2_map {
	enum qcow2_kind kind;
	uint64_t host; /* DATA: host offset of pos; COMPRESSED: L2 entry */
	uint64_t run;  /* bytes from pos of the same kind */
};

/* Kind of the unit (cluster, or subcluster with extended L2) at pos. */
static int unit_at(struct img *img, struct qcow2_state *s, uint64_t pos,
		   struct qcow2_map *m)
{
	uint64_t vc = pos >> s->cluster_bits;
	uint32_t l1i = (uint32_t)(vc / s->l2_entries);
	uint32_t l2i = (uint32_t)(vc % s->l2_entries);
	uint64_t in = pos & (s->cluster_size - 1);
	uint64_t *t, e, bm, host, data_size;
	int ret;

	m->run = s->subcluster_size - (pos & (s->subcluster_size - 1));
	m->host = 0;
	ret = qcow2_l2_load(img, s, l1i, &t);
	if (ret < 0)
		return ret;
	if (!t) {
		m->kind = QCOW2_UNALLOCATED;
		return 0;
	}
	/* The bitmap before the entry: a writer stores them the other way
	 * round, so a new bitmap comes with its new entry. */
	bm = s->l2_words == 2 ? l2_get(t, l2i * 2 + 1) : 0;
	e = l2_get(t, l2i * s->l2_words);
	if (e & QCOW2_OFLAG_COMPRESSED) {
		m->kind = QCOW2_COMPRESSED;
		m->host = e;
		m->run = s->cluster_size - in;
		return 0;
	}
	host = e & QCOW2_OFFSET_MASK;
	if (s->l2_words == 2) {
		unsigned sc = (unsigned)(in / s->subcluster_size);

		if (bm & (UINT64_C(1) << (32 + sc)))
			m->kind = QCOW2_ZERO;
		else if (bm & (UINT64_C(1) << sc))
			m->kind = QCOW2_DATA;
		else
			m->kind = QCOW2_UNALLOCATED;
	} else if (e & QCOW2_OFLAG_ZERO) {
		m->kind = QCOW2_ZERO;
	} else {
		/* An external data file maps cluster 0 at offset 0. */
		bool mapped = host ||
			      (s->has_ext_data && (e & QCOW2_OFLAG_COPIED));

		m->kind = mapped ? QCOW2_DATA : QCOW2_UNALLOCATED;
	}
	if (m->kind != QCOW2_DATA)
		return 0;
	data_size = s->has_ext_data
			    ? UINT64_MAX
			    : __atomic_load_n(&s->file_size, __ATOMIC_ACQUIRE);
	if (host % s->cluster_size || host >= data_size ||
	    (!host && !s->has_ext_data))
		return img_error(img, -EINVAL,
				 "L2 entry for cluster %llu points %s",
				 (unsigned long long)vc,
				 host % s->cluster_size
					 ? "at an unaligned offset"
					 : "past the end of the file");
	m->host = host + in;
	return 0;
}

/* The run at pos of one kind (DATA: contiguous on the host), at most
 * len bytes. */
static int qcow2_lookup(struct img *img, struct qcow2_state *s, uint64_t pos,
			uint64_t len, bool join_compressed, struct qcow2_map *m)
{
	struct qcow2_map next;
	int ret = unit_at(img, s, pos, m);

	if (ret < 0)
		return ret;
	if (m->kind == QCOW2_COMPRESSED && !join_compressed) {
		m->run = qmin(m->run, len);
		return 0;
	}
	while (m->run < len) {
		ret = unit_at(img, s, pos + m->run, &next);
		if (ret < 0)
			return ret;
		if (next.kind != m->kind ||
		    (m->kind == QCOW2_DATA && next.host != m->host + m->run))
			break;
		m->run += next.run;
	}
	m->run = qmin(m->run, len);
	return 0;
}

/* ---- reads ------------------------------------------------------------ */

static int read_compressed(struct img *img, struct qcow2_state *s,
			   uint64_t entry, uint8_t *out)
{
	uint64_t off, len;
	uint8_t *in;
	int ret;

	qcow2_compressed_range(s, entry, &off, &len);
	if (off >= __atomic_load_n(&s->file_size, __ATOMIC_ACQUIRE) ||
	    len > 2 * (uint64_t)s->cluster_size + 512)
		return img_error(img, -EINVAL,
				 "compressed cluster at %llu lies outside the "
				 "file",
				 (unsigned long long)off);
	in = malloc(len);
	if (!in)
		return img_error(img, -ENOMEM, "out of memory");
	ret = img_file_pread_zero_eof(&s->file, in, len, off);
	if (ret >= 0) {
		ret = qcow2_decompress(s, in, len, out, s->cluster_size);
		if (ret < 0)
			img_error(img, ret,
				  "compressed cluster at %llu does not "
				  "decompress",
				  (unsigned long long)off);
	}
	free(in);
	return ret;
}

/* A read with layout_lock held (shared) by the caller. */
static int read_locked(struct img *img, uint64_t off, const struct iovec *iov,
		       int iovcnt, size_t len)
{
	struct qcow2_state *s = img_state(img);
	struct iovec small[16], *part = small;
	uint8_t *cbuf = NULL;
	size_t done = 0;
	int ret = 0, n;

	if (iovcnt > 16) {
		part = malloc(sizeof(*part) * (size_t)iovcnt);
		if (!part)
			return img_error(img, -ENOMEM, "out of memory");
	}
	while (done < len) {
		uint64_t pos = off + done;
		struct qcow2_map m;

		ret = qcow2_lookup(img, s, pos, len - done, false, &m);
		if (ret < 0)
			break;
		switch (m.kind) {
		case QCOW2_DATA:
			n = img_iov_slice(iov, iovcnt, done, m.run, part,
					  iovcnt);
			if (n < 0) {
				ret = n;
				break;
			}
			if (s->has_ext_data) {
				/* A raw data file may be shorter than the
				 * disk: past its end reads as zero. */
				uint8_t *b = malloc(m.run);

				if (!b) {
					ret = img_error(img, -ENOMEM,
							"out of memory");
					break;
				}
				ret = img_file_pread_zero_eof(s->data, b, m.run,
							      m.host);
				img_iov_from_buf(iov, iovcnt, done, b, m.run);
				free(b);
				break;
			}
			if (m.host + m.run >
			    __atomic_load_n(&s->file_size, __ATOMIC_ACQUIRE)) {
				ret = img_error(
					img, -EINVAL,
					"data at %llu runs past the end "
					"of the file",
					(unsigned long long)m.host);
				break;
			}
			ret = img_file_preadv(&s->file, part, n, m.host);
			break;
		case QCOW2_UNALLOCATED:
			n = img_iov_slice(iov, iovcnt, done, m.run, part,
					  iovcnt);
			if (n < 0) {
				ret = n;
				break;
			}
			ret = img_read_backing(img, pos, part, n, m.run);
			break;
		case QCOW2_ZERO:
			img_iov_memset(iov, iovcnt, done, 0, m.run);
			break;
		case QCOW2_COMPRESSED:
			if (!cbuf) {
				cbuf = malloc(s->cluster_size);
				if (!cbuf) {
					ret = img_error(img, -ENOMEM,
							"out of memory");
					break;
				}
			}
			ret = read_compressed(img, s, m.host, cbuf);
			if (ret >= 0)
				img_iov_from_buf(iov, iovcnt, done,
						 cbuf + (pos &
							 (s->cluster_size - 1)),
						 m.run);
			break;
		}
		if (ret < 0)
			break;
		done += m.run;
	}
	free(cbuf);
	if (part != small)
		free(part);
	if (ret >= 0 && s->compress)
		qcow2_compress_pending_overlay(s, off, iov, iovcnt, len);
	return ret < 0 ? ret : 0;
}

static int qcow2_preadv(struct img *img, uint64_t off, const struct iovec *iov,
			int iovcnt, size_t len)
{
	struct qcow2_state *s = img_state(img);
	int ret;

	pthread_rwlock_rdlock(&s->layout_lock);
	ret = read_locked(img, off, iov, iovcnt, len);
	pthread_rwlock_unlock(&s->layout_lock);
	return ret;
}

/* Within a write (layout_lock already held). */
static int read_buf(struct img *img, uint64_t off, void *buf, size_t len)
{
	struct iovec v = { buf, len };

	if (!len)
		return 0;
	return read_locked(img, off, &v, 1, len);
}

/* ---- writes ----------------------------------------------------------- */

static int check_write(struct img *img, struct qcow2_state *s)
{
	if (__atomic_load_n(&s->sync_failed, __ATOMIC_ACQUIRE))
		return img_error(img, -EIO,
				 "an earlier flush failed; the image must be "
				 "reopened (and checked) before more writes");
	return 0;
}

/* Release what an L2 entry held (at the next commit). */
int qcow2_entry_release(struct img *img, struct qcow2_state *s, uint64_t e)
{
	uint64_t off, len;

	if (e & QCOW2_OFLAG_COMPRESSED) {
		qcow2_compressed_range(s, e, &off, &len);
		return qcow2_free_later(img, s, off, len);
	}
	off = e & QCOW2_OFFSET_MASK;
	if (!off)
		return 0;
	return qcow2_free_later(img, s, off, s->cluster_size);
}

/* May the cluster of entry l2i be written in place: this image's own
 * (COPIED), not compressed, wholly allocated?  Sets *host. */
static bool entry_in_place(const struct qcow2_state *s, const uint64_t *t,
			   uint32_t l2i, uint64_t *host)
{
	uint64_t bm = s->l2_words == 2 ? l2_get(t, l2i * 2 + 1) : 0;
	uint64_t e = l2_get(t, l2i * s->l2_words);

	*host = e & QCOW2_OFFSET_MASK;
	if ((e & QCOW2_OFLAG_COMPRESSED) || !(e & QCOW2_OFLAG_COPIED) ||
	    !(e & QCOW2_OFFSET_MASK))
		return false;
	if (s->l2_words == 2)
		return bm == QCOW2_SC_ALLOC_ALL;
	return !(e & QCOW2_OFLAG_ZERO);
}

/* The entry before the bitmap (unit_at reads them the other way round). */
static void entry_set(struct qcow2_state *s, uint64_t *t, uint32_t l2i,
		      uint64_t e, uint64_t bitmap)
{
	__atomic_store_n(&t[l2i * s->l2_words], e, __ATOMIC_RELEASE);
	if (s->l2_words == 2)
		__atomic_store_n(&t[l2i * 2 + 1], bitmap, __ATOMIC_RELEASE);
}

static bool ranges_meet(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* Would a data write at host [off, off+len) land on metadata (header,
 * L1, L2 and refcount tables, snapshot table)?  Only a corrupt image
 * makes it so; the write is refused rather than let it destroy tables. */
static int check_overlap(struct img *img, struct qcow2_state *s, uint64_t off,
			 uint64_t len)
{
	uint64_t cs = s->cluster_size;
	const char *what = NULL;

	if (ranges_meet(off, len, 0, cs))
		what = "the header";
	else if (ranges_meet(off, len, s->h.l1_table_offset,
			     (uint64_t)s->h.l1_size * 8))
		what = "the L1 table";
	else if (ranges_meet(off, len, s->h.refcount_table_offset,
			     (uint64_t)s->h.refcount_table_clusters
				     << s->cluster_bits))
		what = "the refcount table";
	else if (s->nsnapshots && ranges_meet(off, len, s->h.snapshots_offset,
					      s->snapshots_size))
		what = "the snapshot table";
	/* Table by table only where that stays cheap per write. */
	if (s->h.l1_size > 65536 || s->reftable_cap > 65536)
		return what ? img_error(img, -EIO,
					"data at %llu would overwrite %s: the "
					"image is corrupt (run check -r all)",
					(unsigned long long)off, what)
			    : 0;
	for (uint32_t i = 0; !what && i < s->h.l1_size; i++)
		if ((s->l1[i] & QCOW2_OFFSET_MASK) &&
		    ranges_meet(off, len, s->l1[i] & QCOW2_OFFSET_MASK, cs))
			what = "an L2 table";
	for (uint64_t i = 0; !what && s->reftable && i < s->reftable_cap; i++)
		if ((s->reftable[i] & QCOW2_REFT_OFFSET_MASK) &&
		    ranges_meet(off, len,
				s->reftable[i] & QCOW2_REFT_OFFSET_MASK, cs))
			what = "a refcount block";
	if (!what)
		return 0;
	return img_error(img, -EIO,
			 "data at %llu would overwrite %s: the image is "
			 "corrupt (run check -r all)",
			 (unsigned long long)off, what);
}

/* Write [pos, pos+len) (within one L2 table) into fresh clusters, with
 * the old contents of the first and last clusters around it. */
static int write_fresh(struct img *img, struct qcow2_state *s, uint64_t *t,
		       uint32_t l1i, uint64_t pos, const struct iovec *iov,
		       int iovcnt, size_t done, uint64_t len)
{
	uint64_t cs = s->cluster_size;
	uint64_t start = pos & ~(cs - 1);
	uint64_t end = (pos + len + cs - 1) & ~(cs - 1);
	uint64_t n = (end - start) >> s->cluster_bits, first;
	uint64_t head = pos - start, tail = end - (pos + len);
	uint8_t *hbuf = NULL, *tbuf = NULL;
	struct iovec *v;
	int nv = 0, ret;

	v = malloc(sizeof(*v) * ((size_t)iovcnt + 2));
	if (!v)
		return img_error(img, -ENOMEM, "out of memory");
	if (head) {
		hbuf = malloc(head);
		ret = hbuf ? read_buf(img, start, hbuf, head)
			   : img_error(img, -ENOMEM, "out of memory");
		if (ret < 0)
			goto out;
		v[nv].iov_base = hbuf;
		v[nv++].iov_len = head;
	}
	ret = img_iov_slice(iov, iovcnt, done, len, v + nv, iovcnt);
	if (ret < 0)
		goto out;
	nv += ret;
	if (tail) {
		uint64_t tpos = pos + len;
		uint64_t avail = img_size(img) > tpos ? img_size(img) - tpos
						      : 0;

		tbuf = calloc(1, tail);
		ret = tbuf ? read_buf(img, tpos, tbuf, qmin(tail, avail))
			   : img_error(img, -ENOMEM, "out of memory");
		if (ret < 0)
			goto out;
		v[nv].iov_base = tbuf;
		v[nv++].iov_len = tail;
	}
	ret = qcow2_alloc_clusters(img, s, n, &first);
	if (ret < 0)
		goto out;
	ret = check_overlap(img, s, first << s->cluster_bits,
			    n << s->cluster_bits);
	if (ret >= 0) {
		ret = img_file_pwritev(&s->file, v, nv,
				       first << s->cluster_bits);
		if (ret < 0)
			img_error(img, ret, "cannot write data: %s",
				  strerror(-ret));
	}
	if (ret < 0) {
		/* Nothing references the clusters: give them back. */
		for (uint64_t i = 0; i < n; i++)
			qcow2_ref_set(img, s, first + i, 0);
		goto out;
	}
	s->data_unsynced = true;
	for (uint64_t i = 0; i < n; i++) {
		uint32_t l2i = (uint32_t)(((start >> s->cluster_bits) + i) %
					  s->l2_entries);

		ret = qcow2_entry_release(img, s, t[l2i * s->l2_words]);
		if (ret < 0)
			goto out;
		entry_set(s, t, l2i,
			  ((first + i) << s->cluster_bits) | QCOW2_OFLAG_COPIED,
			  QCOW2_SC_ALLOC_ALL);
	}
	s->l2_dirty[l1i] = 1;
	ret = 0;
out:
	free(hbuf);
	free(tbuf);
	free(v);
	return ret;
}

/* The run of clusters from l2i on that may be written in place and lie
 * next to each other on the host, from pos up to limit: *chunk bytes at
 * *host.  False when the first may not. */
static bool in_place_run(const struct qcow2_state *s, const uint64_t *t,
			 uint32_t l2i, uint64_t pos, uint64_t limit,
			 uint64_t *chunk, uint64_t *host)
{
	uint64_t cs = s->cluster_size, next;

	if (!entry_in_place(s, t, l2i, host))
		return false;
	*host += pos & (cs - 1);
	while (pos + *chunk < limit) {
		uint32_t j = (uint32_t)(((pos + *chunk) >> s->cluster_bits) %
					s->l2_entries);

		if (!entry_in_place(s, t, j, &next) || next != *host + *chunk)
			break;
		*chunk += qmin(cs, limit - pos - *chunk);
	}
	return true;
}

/* The L2 table of l1i when this image owns it (COPIED) and it is loaded:
 * its in-place entries may be written without meta_lock. */
static uint64_t *l2_owned(const struct qcow2_state *s, uint32_t l1i)
{
	uint64_t e = l1_get(s, l1i);

	if (!(e & QCOW2_OFLAG_COPIED) || !(e & QCOW2_OFFSET_MASK))
		return NULL;
	return __atomic_load_n(&s->l2[l1i], __ATOMIC_ACQUIRE);
}

static int write_in_place(struct img *img, struct qcow2_state *s,
			  const struct iovec *iov, int iovcnt, size_t done,
			  uint64_t chunk, uint64_t host, struct iovec *part)
{
	int n, ret;

	n = img_iov_slice(iov, iovcnt, done, chunk, part, iovcnt);
	if (n < 0)
		return n;
	if (host + chunk > __atomic_load_n(&s->file_size, __ATOMIC_ACQUIRE))
		return img_error(img, -EINVAL,
				 "data at %llu runs past the end of the file",
				 (unsigned long long)host);
	/* the tables it compares with change under meta_lock */
	pthread_mutex_lock(&s->meta_lock);
	ret = check_overlap(img, s, host, chunk);
	pthread_mutex_unlock(&s->meta_lock);
	if (ret < 0)
		return ret;
	ret = img_file_pwritev(&s->file, part, n, host);
	if (ret < 0)
		return img_error(img, ret, "cannot write data: %s",
				 strerror(-ret));
	return 0;
}

/* [pos, pos + chunk) where the first cluster may not be written in place,
 * meta_lock held: the table made ours, the lookup made again, fresh
 * clusters for the run that still may not.  *chunk becomes the bytes
 * written, 0 when a parallel write made the first cluster ours meanwhile
 * (the caller then writes it in place). */
static int write_allocating(struct img *img, struct qcow2_state *s,
			    uint64_t pos, uint64_t limit,
			    const struct iovec *iov, int iovcnt, size_t done,
			    uint64_t *chunk)
{
	uint64_t vc = pos >> s->cluster_bits, host;
	uint32_t l1i = (uint32_t)(vc / s->l2_entries);
	uint32_t l2i = (uint32_t)(vc % s->l2_entries);
	uint64_t *t;
	int ret;

	ret = qcow2_l2_for_write(img, s, l1i, &t);
	if (ret < 0)
		return ret;
	if (entry_in_place(s, t, l2i, &host)) {
		*chunk = 0;
		return 0;
	}
	while (pos + *chunk < limit) {
		uint32_t j = (uint32_t)(((pos + *chunk) >> s->cluster_bits) %
					s->l2_entries);

		if (entry_in_place(s, t, j, &host))
			break;
		*chunk += qmin(s->cluster_size, limit - pos - *chunk);
	}
	return write_fresh(img, s, t, l1i, pos, iov, iovcnt, done, *chunk);
}

/* layout_lock held shared by the caller. */
int qcow2_write_plain(struct img *img, uint64_t off, const struct iovec *iov,
		      int iovcnt, size_t len)
{
	struct qcow2_state *s = img_state(img);
	uint64_t cs = s->cluster_size;
	struct iovec small[16], *part = small;
	size_t done = 0;
	int ret = check_write(img, s);

	if (ret < 0)
		return ret;
	if (iovcnt > 16) {
		part = malloc(sizeof(*part) * (size_t)iovcnt);
		if (!part)
			return img_error(img, -ENOMEM, "out of memory");
	}
	while (done < len) {
		uint64_t pos = off + done;
		uint64_t vc = pos >> s->cluster_bits;
		uint32_t l1i = (uint32_t)(vc / s->l2_entries);
		uint32_t l2i = (uint32_t)(vc % s->l2_entries);
		uint64_t table_end = ((uint64_t)(l1i + 1) * s->l2_entries)
				     << s->cluster_bits;
		uint64_t limit = qmin(off + len, table_end);
		uint64_t chunk = qmin(cs - (pos & (cs - 1)), limit - pos);
		uint64_t host, *t = l2_owned(s, l1i);

		if (t && in_place_run(s, t, l2i, pos, limit, &chunk, &host)) {
			ret = write_in_place(img, s, iov, iovcnt, done, chunk,
					     host, part);
		} else {
			pthread_mutex_lock(&s->meta_lock);
			ret = write_allocating(img, s, pos, limit, iov, iovcnt,
					       done, &chunk);
			pthread_mutex_unlock(&s->meta_lock);
		}
		if (ret < 0)
			break;
		done += chunk;
	}
	if (part != small)
		free(part);
	return ret < 0 ? ret : 0;
}

static int qcow2_pwritev(struct img *img, uint64_t off, const struct iovec *iov,
			 int iovcnt, size_t len)
{
	struct qcow2_state *s = img_state(img);
	int ret;

	pthread_rwlock_rdlock(&s->layout_lock);
	if (s->compress)
		ret = qcow2_write_compressed(img, s, off, iov, iovcnt, len);
	else
		ret = qcow2_write_plain(img, off, iov, iovcnt, len);
	pthread_rwlock_unlock(&s->layout_lock);
	return ret;
}

/* ---- commit ----------------------------------------------------------- */

static int l1_write(struct img *img, struct qcow2_state *s)
{
	size_t bytes = (size_t)s->h.l1_size * 8;
	uint64_t *buf;
	int ret;

	if (!bytes)
		return 0;
	buf = malloc(bytes);
	if (!buf)
		return img_error(img, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < s->h.l1_size; i++)
		buf[i] = IMG_BE64(s->l1[i]);
	ret = img_file_pwrite(&s->file, buf, bytes, s->h.l1_table_offset);
	free(buf);
	if (ret < 0)
		return img_error(img, ret, "cannot write the L1 table: %s",
				 strerror(-ret));
	return 0;
}

static int l2_write_dirty(struct img *img, struct qcow2_state *s, bool *any)
{
	uint64_t *buf = NULL;
	int ret = 0;

	*any = false;
	for (uint32_t i = 0; i < s->h.l1_size; i++) {
		if (!s->l2_dirty[i])
			continue;
		if (!buf) {
			buf = malloc(s->cluster_size);
			if (!buf)
				return img_error(img, -ENOMEM, "out of memory");
		}
		for (uint32_t j = 0; j < s->cluster_size / 8; j++)
			buf[j] = IMG_BE64(s->l2[i][j]);
		ret = img_file_pwrite(&s->file, buf, s->cluster_size,
				      s->l1[i] & QCOW2_OFFSET_MASK);
		if (ret < 0) {
			img_error(img, ret, "cannot write L2 table %u: %s", i,
				  strerror(-ret));
			break;
		}
		s->l2_dirty[i] = 0;
		*any = true;
	}
	free(buf);
	return ret;
}

int qcow2_commit(struct img *img, struct qcow2_state *s, bool sync)
{
	bool any_l2 = false;
	int ret;

	if (!s->writable)
		return 0;
	ret = check_write(img, s);
	if (ret < 0)
		return ret;
	/* A cluster still being gathered for compression goes first. */
	ret = qcow2_compress_pending_store(img, s);
	if (ret < 0)
		return ret;
	if (s->data_unsynced) {
		ret = qcow2_sync(img, s);
		if (ret < 0)
			return ret;
		s->data_unsynced = false;
	}
	if (qcow2_refs_dirty(s)) {
		ret = qcow2_refs_commit(img, s);
		if (ret >= 0)
			ret = qcow2_sync(img, s);
		if (ret < 0)
			return ret;
	}
	ret = l2_write_dirty(img, s, &any_l2);
	if (ret >= 0 && any_l2)
		ret = qcow2_sync(img, s);
	if (ret < 0)
		return ret;
	if (s->l1_moved) {
		ret = l1_write(img, s);
		if (ret >= 0)
			ret = qcow2_sync(img, s);
		if (ret >= 0)
			ret = qcow2_header_write(img, s);
		if (ret >= 0)
			ret = qcow2_sync(img, s);
		if (ret >= 0 && s->old_l1_size)
			ret = qcow2_free_later(img, s, s->old_l1_offset,
					       (uint64_t)s->old_l1_size * 8);
		if (ret < 0)
			return ret;
		s->l1_moved = false;
		s->l1_dirty = false;
	} else if (s->l1_dirty) {
		ret = l1_write(img, s);
		if (ret >= 0)
			ret = qcow2_sync(img, s);
		if (ret < 0)
			return ret;
		s->l1_dirty = false;
	}
	if (s->header_dirty) {
		ret = qcow2_header_write(img, s);
		if (ret >= 0)
			ret = qcow2_sync(img, s);
		if (ret < 0)
			return ret;
	}
	if (s->npending) {
		ret = qcow2_refs_apply_pending(img, s);
		if (ret >= 0 && sync)
			ret = qcow2_sync(img, s);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int qcow2_flush(struct img *img)
{
	struct qcow2_state *s = img_state(img);
	int ret;

	if (!s->writable)
		return 0;
	pthread_mutex_lock(&s->meta_lock);
	if (s->npending) {
		/* Releases clusters a parallel reader may still be reading
		 * (a write replaced the entry it looked up): wait for every
		 * request first. */
		pthread_mutex_unlock(&s->meta_lock);
		pthread_rwlock_wrlock(&s->layout_lock);
		pthread_mutex_lock(&s->meta_lock);
		ret = qcow2_commit(img, s, false);
		pthread_mutex_unlock(&s->meta_lock);
		pthread_rwlock_unlock(&s->layout_lock);
	} else {
		/* The releases a commit adds (old tables) are of metadata
		 * clusters, which requests never read. */
		ret = qcow2_commit(img, s, false);
		pthread_mutex_unlock(&s->meta_lock);
	}
	if (ret < 0)
		return ret;
	/* in-place writes, and what the commit wrote last */
	return qcow2_sync(img, s);
}

/* ---- zeroes, discard -------------------------------------------------- */

/* Make whole clusters [pos, pos+len) read as zero (zero_flag) or fall
 * through to the backing file / read as zero without one (unallocated). */
static int clusters_clear(struct img *img, struct qcow2_state *s, uint64_t pos,
			  uint64_t len, bool zero_flag)
{
	while (len) {
		uint64_t vc = pos >> s->cluster_bits;
		uint32_t l1i = (uint32_t)(vc / s->l2_entries);
		uint32_t l2i = (uint32_t)(vc % s->l2_entries);
		uint64_t *t;
		int ret;

		if (!zero_flag && !(s->l1[l1i] & QCOW2_OFFSET_MASK)) {
			/* The whole table is unallocated already. */
			uint64_t skip = ((uint64_t)(s->l2_entries - l2i))
					<< s->cluster_bits;

			skip = qmin(skip, len);
			pos += skip;
			len -= skip;
			continue;
		}
		ret = qcow2_l2_for_write(img, s, l1i, &t);
		if (ret < 0)
			return ret;
		for (; l2i < s->l2_entries && len; l2i++) {
			uint64_t e = t[l2i * s->l2_words];

			ret = qcow2_entry_release(img, s, e);
			if (ret < 0)
				return ret;
			if (zero_flag)
				entry_set(s, t, l2i,
					  s->l2_words == 2 ? 0
							   : QCOW2_OFLAG_ZERO,
					  QCOW2_SC_ZERO_ALL);
			else
				entry_set(s, t, l2i, 0, 0);
			pos += s->cluster_size;
			len -= qmin(len, s->cluster_size);
		}
		s->l2_dirty[l1i] = 1;
	}
	return 0;
}

static int write_zero_data(struct img *img, struct qcow2_state *s, uint64_t pos,
			   uint64_t len)
{
	while (len) {
		uint64_t n = qmin(len, s->cluster_size);
		struct iovec v = { s->zero_cluster, (size_t)n };
		int ret = qcow2_pwritev(img, pos, &v, 1, (size_t)n);

		if (ret < 0)
			return ret;
		pos += n;
		len -= n;
	}
	return 0;
}

/* The whole clusters of [off, off+len): [*a, *b).  The last cluster of
 * an image whose size is not a multiple of the cluster size counts as
 * whole when the range reaches the end. */
static bool whole_clusters(struct img *img, struct qcow2_state *s, uint64_t off,
			   uint64_t len, uint64_t *a, uint64_t *b)
{
	uint64_t cs = s->cluster_size;

	*a = (off + cs - 1) & ~(cs - 1);
	*b = (off + len) & ~(cs - 1);
	if (off + len == img_size(img))
		*b = (off + len + cs - 1) & ~(cs - 1);
	return *a < *b;
}

static int qcow2_write_zeroes(struct img *img, uint64_t off, uint64_t len,
			      unsigned flags)
{
	struct qcow2_state *s = img_state(img);
	bool has_backing = s->backing_name[0];
	uint64_t a, b, end = off + len;
	int ret = check_write(img, s);

	(void)flags;
	if (ret < 0)
		return ret;
	if (s->h.version < 3 && has_backing)
		return -ENOTSUP; /* no zero flag: the core writes zeros */
	ret = qcow2_compress_pending_store(img, s);
	if (ret < 0)
		return ret;
	if (!whole_clusters(img, s, off, len, &a, &b))
		return write_zero_data(img, s, off, len);
	if (a > off) {
		ret = write_zero_data(img, s, off, a - off);
		if (ret < 0)
			return ret;
	}
	ret = clusters_clear(img, s, a, b - a, s->h.version >= 3);
	if (ret < 0)
		return ret;
	if (end > b)
		ret = write_zero_data(img, s, b, end - b);
	return ret;
}

static int qcow2_discard(struct img *img, uint64_t off, uint64_t len)
{
	struct qcow2_state *s = img_state(img);
	uint64_t a, b;
	int ret = check_write(img, s);

	if (ret < 0)
		return ret;
	if (!whole_clusters(img, s, off, len, &a, &b))
		return 0;
	ret = qcow2_compress_pending_store(img, s);
	if (ret < 0)
		return ret;
	/* Over a backing file, v3 makes discarded clusters read as zero
	 * (as QEMU does) rather than showing the parent's old data. */
	return clusters_clear(img, s, a, b - a,
			      s->h.version >= 3 && s->backing_name[0]);
}

/* ---- block status ----------------------------------------------------- */

static int qcow2_block_status(struct img *img, uint64_t off, uint64_t len,
			      struct img_extent *ext)
{
	struct qcow2_state *s = img_state(img);
	struct qcow2_map m;
	int ret = qcow2_lookup(img, s, off, len, true, &m);

	if (ret < 0)
		return ret;
	ext->start = off;
	ext->length = m.run;
	ext->file_offset = -1;
	switch (m.kind) {
	case QCOW2_DATA:
		ext->flags = IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED;
		ext->depth = 0;
		if (!s->has_ext_data)
			ext->file_offset = (int64_t)m.host;
		break;
	case QCOW2_COMPRESSED:
		ext->flags = IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED;
		ext->depth = 0;
		break;
	case QCOW2_ZERO:
		ext->flags = IMG_EXTENT_ZERO | IMG_EXTENT_ALLOCATED;
		ext->depth = 0;
		break;
	case QCOW2_UNALLOCATED:
		ext->flags = s->backing_name[0] ? 0 : IMG_EXTENT_ZERO;
		ext->depth = -1;
		break;
	}
	return 0;
}

/* ---- resize ----------------------------------------------------------- */

static int qcow2_resize(struct img *img, uint64_t new_size, unsigned flags)
{
	struct qcow2_state *s = img_state(img);
	uint64_t l2_span = (uint64_t)s->l2_entries << s->cluster_bits;
	uint64_t need = (new_size + l2_span - 1) / l2_span;
	uint64_t old = s->h.size;
	int ret = check_write(img, s);

	(void)flags;
	if (ret < 0)
		return ret;
	if (s->nsnapshots && new_size < old)
		return img_error(img, -ENOTSUP,
				 "cannot shrink an image that has internal "
				 "snapshots");
	if (new_size < old) {
		/* Only when nothing is stored past the new end. */
		uint64_t pos = new_size;

		while (pos < old) {
			struct qcow2_map m;

			ret = qcow2_lookup(img, s, pos, old - pos, true, &m);
			if (ret < 0)
				return ret;
			if (m.kind != QCOW2_UNALLOCATED)
				return img_error(
					img, -ENOTSUP,
					"cannot shrink: data is stored at "
					"%llu, past the new end",
					(unsigned long long)pos);
			pos += m.run;
		}
	}
	if (need * 8 > QCOW2_MAX_L1_BYTES)
		return img_error(img, -EFBIG, "size too large for qcow2");
	if (need > s->h.l1_size) {
		uint64_t clusters = (need * 8 + s->cluster_size - 1) >>
				    s->cluster_bits;
		uint32_t n = (uint32_t)((clusters << s->cluster_bits) / 8);
		uint64_t *l1 = calloc(n, 8);
		uint64_t **l2 = calloc(n, sizeof(*l2));
		uint8_t *dirty = calloc(n, 1);
		uint64_t first;

		if (!l1 || !l2 || !dirty) {
			free(l1);
			free(l2);
			free(dirty);
			return img_error(img, -ENOMEM, "out of memory");
		}
		ret = qcow2_commit(img, s, true);
		if (ret >= 0)
			ret = qcow2_alloc_clusters(img, s, clusters, &first);
		if (ret < 0) {
			free(l1);
			free(l2);
			free(dirty);
			return ret;
		}
		memcpy(l1, s->l1, (size_t)s->h.l1_size * 8);
		memcpy(l2, s->l2, (size_t)s->h.l1_size * sizeof(*l2));
		memcpy(dirty, s->l2_dirty, s->h.l1_size);
		free(s->l1);
		free(s->l2);
		free(s->l2_dirty);
		s->l1 = l1;
		s->l2 = l2;
		s->l2_dirty = dirty;
		s->old_l1_offset = s->h.l1_table_offset;
		s->old_l1_size = s->h.l1_size;
		s->h.l1_table_offset = first << s->cluster_bits;
		s->h.l1_size = n;
		s->l1_moved = true;
	}
	s->h.size = new_size;
	s->header_dirty = true;
	ret = qcow2_commit(img, s, true);
	if (ret < 0)
		return ret;
	img_set_size(img, new_size);
	return 0;
}

/* ---- description, chains ---------------------------------------------- */

static int qcow2_get_info(struct img *img, struct img_info *info)
{
	struct qcow2_state *s = img_state(img);
	const struct qcow2_header *h = &s->h;

	snprintf(info->subformat, sizeof(info->subformat), "%s",
		 h->version >= 3 ? "v3" : "v2");
	info->cluster_size = s->cluster_size;
	info->dirty = h->incompatible_features & QCOW2_INCOMPAT_DIRTY;
	snprintf(info->backing_filename, sizeof(info->backing_filename), "%s",
		 s->backing_name);
	snprintf(info->backing_format, sizeof(info->backing_format), "%.15s",
		 s->backing_format);
	img_info_add_file(info, img_filename(img));
	if (s->has_ext_data)
		img_info_add_file(info, s->ext_data.path);
	img_info_add_str(info, "compat", h->version >= 3 ? "1.1" : "0.10");
	img_info_add_int(info, "cluster-size", s->cluster_size);
	img_info_add_int(info, "refcount-bits", 1 << h->refcount_order);
	img_info_add_str(info, "compression-type",
			 h->compression_type == QCOW2_COMPRESSION_ZSTD
				 ? "zstd"
				 : "zlib");
	if (h->version >= 3) {
		img_info_add_bool(info, "lazy-refcounts",
				  h->compatible_features &
					  QCOW2_COMPAT_LAZY_REFCOUNTS);
		img_info_add_bool(info, "corrupt",
				  h->incompatible_features &
					  QCOW2_INCOMPAT_CORRUPT);
		img_info_add_bool(info, "extended-l2", s->l2_words == 2);
	}
	if (s->data_file_name[0])
		img_info_add_str(info, "data-file", s->data_file_name);
	img_info_add_int(info, "snapshots", s->nsnapshots);
	for (uint32_t i = 0; i < s->nsnapshots; i++) {
		char key[48];

		snprintf(key, sizeof(key), "snapshot-%u", i);
		img_info_add_str(info, key, s->snapshots[i].name);
	}
	return 0;
}

static int qcow2_set_backing(struct img *img, const char *backing_file,
			     const char *backing_format, struct img *parent)
{
	struct qcow2_state *s = img_state(img);
	char old_name[sizeof(s->backing_name)],
		old_fmt[sizeof(s->backing_format)];
	int ret;

	if (!backing_format && parent)
		backing_format = img_format(parent);
	if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME)
		return img_error(img, -ENAMETOOLONG,
				 "backing file name longer than %u bytes",
				 QCOW2_MAX_BACKING_NAME);
	if (backing_format && strlen(backing_format) >= sizeof(old_fmt))
		return img_error(img, -EINVAL, "backing format name too long");
	ret = qcow2_commit(img, s, true);
	if (ret < 0)
		return ret;
	memcpy(old_name, s->backing_name, sizeof(old_name));
	memcpy(old_fmt, s->backing_format, sizeof(old_fmt));
	snprintf(s->backing_name, sizeof(s->backing_name), "%s",
		 backing_file ? backing_file : "");
	snprintf(s->backing_format, sizeof(s->backing_format), "%s",
		 backing_file && backing_format ? backing_format : "");
	ret = qcow2_header_write(img, s);
	if (ret >= 0)
		ret = qcow2_sync(img, s);
	if (ret < 0) {
		memcpy(s->backing_name, old_name, sizeof(old_name));
		memcpy(s->backing_format, old_fmt, sizeof(old_fmt));
	}
	return ret;
}

const struct img_driver img_driver_qcow2 = {
	.name = "qcow2",
	.description = "QEMU copy-on-write v2/v3 (compat 0.10 and 1.1)",
	.flags = IMG_DRV_CONCURRENT_READS | IMG_DRV_COMPRESSED_WRITES,
	.state_size = sizeof(struct qcow2_state),
	.create_options = qcow2_create_options,
	.probe = qcow2_probe,
	.create = qcow2_create,
	.open = qcow2_open,
	.close = qcow2_close,
	.preadv = qcow2_preadv,
	.pwritev = qcow2_pwritev,
	.flush = qcow2_flush,
	.write_zeroes = qcow2_write_zeroes,
	.discard = qcow2_discard,
	.block_status = qcow2_block_status,
	.resize = qcow2_resize,
	.check = qcow2_check,
	.get_info = qcow2_get_info,
	.set_backing = qcow2_set_backing,
	.snapshot_list = qcow2_snapshot_list,
	.snapshot_create = qcow2_snapshot_create,
	.snapshot_apply = qcow2_snapshot_apply,
	.snapshot_delete = qcow2_snapshot_delete,
	.snapshot_load = qcow2_snapshot_load,
};
