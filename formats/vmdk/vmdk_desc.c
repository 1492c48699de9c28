/* SPDX-License-Identifier: MIT */
/*
 * VMDK text descriptor ("Virtual Disk Format 1.1", section "The Descriptor
 * File"), sparse-header validation, geometry and stream markers.
 *
 * The parser is tolerant of what real tools write: comments anywhere,
 * CRLF line ends, trailing blanks, quoted or bare values, keys it does not
 * know (kept, in order, and written back).  It stops at the first NUL, so
 * an embedded descriptor's zero padding ends it.
 */
#include "vmdk_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int desc_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int desc_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

const char *vmdk_extent_type_name(enum vmdk_extent_type t)
{
	switch (t) {
	case VMDK_EXTENT_SPARSE:
		return "SPARSE";
	case VMDK_EXTENT_FLAT:
		return "FLAT";
	case VMDK_EXTENT_ZERO:
		return "ZERO";
	case VMDK_EXTENT_VMFS:
		return "VMFS";
	case VMDK_EXTENT_VMFSSPARSE:
		return "VMFSSPARSE";
	case VMDK_EXTENT_SESPARSE:
		return "SESPARSE";
	}
	return "?";
}

static const char *access_name(enum vmdk_access a)
{
	switch (a) {
	case VMDK_ACCESS_RW:
		return "RW";
	case VMDK_ACCESS_RDONLY:
		return "RDONLY";
	case VMDK_ACCESS_NOACCESS:
		return "NOACCESS";
	}
	return "?";
}

void vmdk_desc_free(struct vmdk_desc *d)
{
	int i;

	for (i = 0; i < d->nextents; i++)
		free(d->extents[i].filename);
	free(d->extents);
	for (i = 0; i < d->nheader_kv; i++) {
		free(d->header_kv[i].key);
		free(d->header_kv[i].value);
	}
	free(d->header_kv);
	for (i = 0; i < d->nddb; i++) {
		free(d->ddb[i].key);
		free(d->ddb[i].value);
	}
	free(d->ddb);
	free(d->parent_hint);
	free(d->encoding);
	memset(d, 0, sizeof(*d));
}

static char *trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' ||
			   end[-1] == '\r' || end[-1] == '\n'))
		*--end = '\0';
	return s;
}

/* Strips one pair of surrounding double quotes; says whether it did. */
static bool unquote(char **v)
{
	size_t n = strlen(*v);

	if (n >= 2 && (*v)[0] == '"' && (*v)[n - 1] == '"') {
		(*v)[n - 1] = '\0';
		(*v)++;
		return true;
	}
	return false;
}

static int kv_append(struct vmdk_desc_kv **arr, int *n, const char *key,
		     const char *value, bool quoted)
{
	struct vmdk_desc_kv *a;
	char *k = strdup(key), *v = strdup(value);

	a = realloc(*arr, (size_t)(*n + 1) * sizeof(**arr));
	if (!k || !v || !a) {
		free(k);
		free(v);
		if (a)
			*arr = a;
		return -ENOMEM;
	}
	*arr = a;
	a[*n].key = k;
	a[*n].value = v;
	a[*n].quoted = quoted;
	(*n)++;
	return 0;
}

int vmdk_desc_add_extent(struct vmdk_desc *d, enum vmdk_access access,
			 uint64_t sectors, enum vmdk_extent_type type,
			 const char *filename, uint64_t offset)
{
	struct vmdk_desc_extent *a;
	char *name = NULL;

	if (filename) {
		name = strdup(filename);
		if (!name)
			return -ENOMEM;
	}
	a = realloc(d->extents, (size_t)(d->nextents + 1) * sizeof(*a));
	if (!a) {
		free(name);
		return -ENOMEM;
	}
	d->extents = a;
	a[d->nextents] = (struct vmdk_desc_extent){
		.access = access,
		.sectors = sectors,
		.type = type,
		.filename = name,
		.offset = offset,
	};
	d->nextents++;
	return 0;
}

static bool parse_u64(const char *s, int base, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

static int parse_extent_type(const char *s, enum vmdk_extent_type *t)
{
	static const struct {
		const char *name;
		enum vmdk_extent_type type;
	} types[] = {
		{ "SPARSE", VMDK_EXTENT_SPARSE },
		{ "FLAT", VMDK_EXTENT_FLAT },
		{ "ZERO", VMDK_EXTENT_ZERO },
		{ "VMFS", VMDK_EXTENT_VMFS },
		{ "VMFSRAW", VMDK_EXTENT_VMFS },
		{ "VMFSRDM", VMDK_EXTENT_VMFS },
		{ "VMFSSPARSE", VMDK_EXTENT_VMFSSPARSE },
		{ "SESPARSE", VMDK_EXTENT_SESPARSE },
	};
	size_t i;

	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		if (!strcmp(s, types[i].name)) {
			*t = types[i].type;
			return 0;
		}
	}
	return -EINVAL;
}

/* "RW 2097152 SPARSE "name.vmdk"" or "RW 4096 FLAT "name-flat.vmdk" 0". */
static int parse_extent_line(struct vmdk_desc *d, char *line, int lineno,
			     char *err, size_t errlen)
{
	char *p = line, *word, *name = NULL;
	enum vmdk_access access;
	enum vmdk_extent_type type;
	uint64_t sectors, offset = 0;

	word = p;
	while (*p && !isspace((unsigned char)*p))
		p++;
	if (*p)
		*p++ = '\0';
	if (!strcmp(word, "RW"))
		access = VMDK_ACCESS_RW;
	else if (!strcmp(word, "RDONLY"))
		access = VMDK_ACCESS_RDONLY;
	else
		access = VMDK_ACCESS_NOACCESS;

	while (isspace((unsigned char)*p))
		p++;
	word = p;
	while (*p && !isspace((unsigned char)*p))
		p++;
	if (*p)
		*p++ = '\0';
	if (!parse_u64(word, 10, &sectors))
		return desc_err(err, errlen,
				"descriptor line %d: extent size '%s' is not a "
				"number of sectors",
				lineno, word);

	while (isspace((unsigned char)*p))
		p++;
	word = p;
	while (*p && !isspace((unsigned char)*p))
		p++;
	if (*p)
		*p++ = '\0';
	if (parse_extent_type(word, &type))
		return desc_err(err, errlen,
				"descriptor line %d: unknown extent type '%s'",
				lineno, word);

	while (isspace((unsigned char)*p))
		p++;
	if (*p == '"') {
		name = ++p;
		while (*p && *p != '"')
			p++;
		if (*p != '"')
			return desc_err(
				err, errlen,
				"descriptor line %d: unterminated extent "
				"file name",
				lineno);
		*p++ = '\0';
	} else if (*p) {
		name = p;
		while (*p && !isspace((unsigned char)*p))
			p++;
		if (*p)
			*p++ = '\0';
	}
	while (isspace((unsigned char)*p))
		p++;
	if (*p && !parse_u64(p, 10, &offset))
		return desc_err(
			err, errlen,
			"descriptor line %d: extent offset '%s' is not a "
			"number",
			lineno, p);
	if (type != VMDK_EXTENT_ZERO && (!name || !*name))
		return desc_err(err, errlen,
				"descriptor line %d: %s extent without a file "
				"name",
				lineno, vmdk_extent_type_name(type));
	if (type == VMDK_EXTENT_ZERO)
		name = NULL;
	if (vmdk_desc_add_extent(d, access, sectors, type, name, offset))
		return -ENOMEM;
	return 0;
}

static bool is_extent_line(const char *line)
{
	size_t n;

	if (!strncmp(line, "RW", 2))
		n = 2;
	else if (!strncmp(line, "RDONLY", 6))
		n = 6;
	else if (!strncmp(line, "NOACCESS", 8))
		n = 8;
	else
		return false;
	return line[n] == ' ' || line[n] == '\t';
}

int vmdk_desc_parse(struct vmdk_desc *d, const char *text, size_t len,
		    char *err, size_t errlen)
{
	char *buf, *line, *next;
	const char *nul;
	int lineno = 0, ret = 0;
	bool seen_version = false, seen_cid = false;
	uint64_t v;

	memset(d, 0, sizeof(*d));
	d->parent_cid = VMDK_CID_NONE;
	nul = memchr(text, '\0', len);
	if (nul)
		len = (size_t)(nul - text);
	buf = malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, text, len);
	buf[len] = '\0';

	for (line = buf; line; line = next) {
		char *eq, *key, *value;
		bool quoted;

		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		line = trim(line);
		if (!*line || *line == '#')
			continue;
		for (key = line; *key; key++) {
			if ((unsigned char)*key < 0x20 && *key != '\t') {
				ret = desc_err(
					err, errlen,
					"descriptor line %d: control "
					"character 0x%02x (binary data?)",
					lineno, (unsigned char)*key);
				goto fail;
			}
		}
		if (is_extent_line(line)) {
			ret = parse_extent_line(d, line, lineno, err, errlen);
			if (ret)
				goto fail;
			continue;
		}
		eq = strchr(line, '=');
		if (!eq) {
			ret = desc_err(
				err, errlen,
				"descriptor line %d: neither 'key=value' "
				"nor an extent: '%.40s'",
				lineno, line);
			goto fail;
		}
		*eq = '\0';
		key = trim(line);
		value = trim(eq + 1);
		quoted = unquote(&value);
		if (!*key) {
			ret = desc_err(err, errlen,
				       "descriptor line %d: empty key", lineno);
			goto fail;
		}
		if (!strcmp(key, "version")) {
			if (!parse_u64(value, 10, &v) || v > 1000) {
				ret = desc_err(
					err, errlen,
					"descriptor line %d: bad version "
					"'%s'",
					lineno, value);
				goto fail;
			}
			d->version = (int)v;
			seen_version = true;
		} else if (!strcmp(key, "CID") || !strcmp(key, "parentCID")) {
			if (!parse_u64(value, 16, &v) || v > UINT32_MAX) {
				ret = desc_err(
					err, errlen,
					"descriptor line %d: %s '%s' is not "
					"a 32-bit hex number",
					lineno, key, value);
				goto fail;
			}
			if (key[0] == 'C') {
				d->cid = (uint32_t)v;
				seen_cid = true;
			} else {
				d->parent_cid = (uint32_t)v;
			}
		} else if (!strcmp(key, "createType")) {
			if (strlen(value) >= sizeof(d->create_type)) {
				ret = desc_err(err, errlen,
					       "descriptor line %d: createType "
					       "too long",
					       lineno);
				goto fail;
			}
			strcpy(d->create_type, value);
		} else if (!strcmp(key, "parentFileNameHint")) {
			free(d->parent_hint);
			d->parent_hint = strdup(value);
			if (!d->parent_hint) {
				ret = -ENOMEM;
				goto fail;
			}
		} else if (!strcmp(key, "encoding")) {
			free(d->encoding);
			d->encoding = strdup(value);
			if (!d->encoding) {
				ret = -ENOMEM;
				goto fail;
			}
		} else if (!strncmp(key, "ddb.", 4) || d->nextents > 0) {
			ret = kv_append(&d->ddb, &d->nddb, key, value, quoted);
			if (ret)
				goto fail;
		} else {
			ret = kv_append(&d->header_kv, &d->nheader_kv, key,
					value, quoted);
			if (ret)
				goto fail;
		}
	}
	if (!seen_version && !seen_cid && d->nextents == 0) {
		ret = desc_err(err, errlen,
			       "not a VMDK descriptor (no version, CID or "
			       "extent lines)");
		goto fail;
	}
	if (d->nextents == 0) {
		ret = desc_err(err, errlen, "descriptor has no extent lines");
		goto fail;
	}
	if (!seen_version)
		d->version = 1;
	free(buf);
	return 0;
fail:
	free(buf);
	vmdk_desc_free(d);
	return ret;
}

const char *vmdk_desc_get(const struct vmdk_desc *d, const char *key)
{
	int i;

	for (i = 0; i < d->nddb; i++)
		if (!strcmp(d->ddb[i].key, key))
			return d->ddb[i].value;
	for (i = 0; i < d->nheader_kv; i++)
		if (!strcmp(d->header_kv[i].key, key))
			return d->header_kv[i].value;
	return NULL;
}

int vmdk_desc_set(struct vmdk_desc *d, const char *key, const char *value)
{
	int i;
	char *v;

	for (i = 0; i < d->nddb; i++) {
		if (!strcmp(d->ddb[i].key, key)) {
			v = strdup(value);
			if (!v)
				return -ENOMEM;
			free(d->ddb[i].value);
			d->ddb[i].value = v;
			return 0;
		}
	}
	return kv_append(&d->ddb, &d->nddb, key, value, true);
}

int vmdk_desc_set_parent_hint(struct vmdk_desc *d, const char *hint)
{
	char *h = NULL;

	if (hint) {
		h = strdup(hint);
		if (!h)
			return -ENOMEM;
	}
	free(d->parent_hint);
	d->parent_hint = h;
	return 0;
}

uint64_t vmdk_desc_total_sectors(const struct vmdk_desc *d)
{
	uint64_t total = 0;
	int i;

	for (i = 0; i < d->nextents; i++)
		total += d->extents[i].sectors;
	return total;
}

struct strbuf {
	char *s;
	size_t len, cap;
	int err;
};

static void sb_printf(struct strbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sb_printf(struct strbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->err)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->err = -EINVAL;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap + (size_t)n + 1) * 2;
		char *s = realloc(b->s, cap);
		if (!s) {
			b->err = -ENOMEM;
			return;
		}
		b->s = s;
		b->cap = cap;
	}
}

int vmdk_desc_format(const struct vmdk_desc *d, char **out, size_t *outlen)
{
	struct strbuf b = { 0 };
	int i;

	b.cap = 1024;
	b.s = malloc(b.cap);
	if (!b.s)
		return -ENOMEM;
	sb_printf(&b, "# Disk DescriptorFile\n");
	sb_printf(&b, "version=%d\n", d->version ? d->version : 1);
	if (d->encoding)
		sb_printf(&b, "encoding=\"%s\"\n", d->encoding);
	sb_printf(&b, "CID=%08" PRIx32 "\n", d->cid);
	sb_printf(&b, "parentCID=%08" PRIx32 "\n", d->parent_cid);
	for (i = 0; i < d->nheader_kv; i++)
		sb_printf(&b,
			  d->header_kv[i].quoted ? "%s=\"%s\"\n" : "%s=%s\n",
			  d->header_kv[i].key, d->header_kv[i].value);
	sb_printf(&b, "createType=\"%s\"\n", d->create_type);
	if (d->parent_hint)
		sb_printf(&b, "parentFileNameHint=\"%s\"\n", d->parent_hint);
	sb_printf(&b, "\n# Extent description\n");
	for (i = 0; i < d->nextents; i++) {
		const struct vmdk_desc_extent *e = &d->extents[i];

		sb_printf(&b, "%s %" PRIu64 " %s", access_name(e->access),
			  e->sectors, vmdk_extent_type_name(e->type));
		if (e->filename)
			sb_printf(&b, " \"%s\"", e->filename);
		if (e->type == VMDK_EXTENT_FLAT || e->type == VMDK_EXTENT_VMFS)
			sb_printf(&b, " %" PRIu64, e->offset);
		sb_printf(&b, "\n");
	}
	sb_printf(&b, "\n# The Disk Data Base\n#DDB\n\n");
	for (i = 0; i < d->nddb; i++)
		sb_printf(&b, d->ddb[i].quoted ? "%s = \"%s\"\n" : "%s = %s\n",
			  d->ddb[i].key, d->ddb[i].value);
	if (b.err) {
		free(b.s);
		return b.err;
	}
	*out = b.s;
	*outlen = b.len;
	return 0;
}

/* ---- sparse header ------------------------------------------------------*/

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

uint64_t vmdk_gt_sectors(uint32_t gtes_per_gt)
{
	return ((uint64_t)gtes_per_gt * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR;
}

uint64_t vmdk_gd_sectors(uint32_t gd_entries)
{
	return ((uint64_t)gd_entries * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR;
}

uint32_t vmdk_gd_entries_for(uint64_t capacity, uint32_t grain_sectors,
			     uint32_t gtes_per_gt)
{
	uint64_t span = (uint64_t)grain_sectors * gtes_per_gt;

	return (uint32_t)((capacity + span - 1) / span);
}

/* 2^40 sectors = 512 TiB, far beyond VMware's 62 TiB limit. */
#define VMDK_MAX_CAPACITY (UINT64_C(1) << 40)

int vmdk_sparse_header_validate(const struct vmdk_sparse_header *h,
				uint64_t file_size, uint32_t *gd_entries,
				char *err, size_t errlen)
{
	uint64_t file_sectors = (file_size + VMDK_SECTOR - 1) / VMDK_SECTOR;
	uint64_t n, gd_sectors;
	bool compressed = h->flags & VMDK_FLAG_COMPRESSED;

	if (h->magic != VMDK_SPARSE_MAGIC)
		return desc_err(err, errlen, "bad sparse header magic 0x%08x",
				h->magic);
	if (h->version < 1 || h->version > 3)
		return desc_err(err, errlen,
				"unsupported sparse header version %u",
				h->version);
	if ((h->flags & VMDK_FLAG_NL_DETECT) &&
	    (h->single_end_line_char != '\n' || h->non_end_line_char != ' ' ||
	     h->double_end_line_char1 != '\r' ||
	     h->double_end_line_char2 != '\n'))
		return desc_err(err, errlen,
				"newline-detection bytes are damaged (file "
				"copied in text mode?)");
	if (!h->grain_size || !is_pow2(h->grain_size) || h->grain_size > 2048)
		return desc_err(err, errlen,
				"grainSize %" PRIu64 " sectors is invalid "
				"(power of two up to 1 MiB expected)",
				h->grain_size);
	if (!is_pow2(h->num_gtes_per_gt) || h->num_gtes_per_gt > 4096)
		return desc_err(err, errlen,
				"numGTEsPerGT %u is invalid (512 expected)",
				h->num_gtes_per_gt);
	if (h->capacity > VMDK_MAX_CAPACITY)
		return desc_err(err, errlen,
				"capacity %" PRIu64 " sectors is too big",
				h->capacity);
	if (compressed && h->compress_algorithm != VMDK_COMPRESS_DEFLATE)
		return desc_err(err, errlen,
				"unknown compressAlgorithm %u (only deflate is "
				"defined)",
				h->compress_algorithm);
	if (h->desc_offset || h->desc_size) {
		if (!h->desc_offset ||
		    h->desc_size * VMDK_SECTOR > VMDK_DESC_MAX_BYTES)
			return desc_err(err, errlen,
					"descriptorSize %" PRIu64
					" sectors at %" PRIu64 " is invalid",
					h->desc_size, h->desc_offset);
		if (h->desc_offset + h->desc_size > file_sectors)
			return desc_err(err, errlen,
					"embedded descriptor (sector %" PRIu64
					"+%" PRIu64 ") lies past the end of "
					"the file",
					h->desc_offset, h->desc_size);
	}
	n = vmdk_gd_entries_for(h->capacity, (uint32_t)h->grain_size,
				h->num_gtes_per_gt);
	gd_sectors = vmdk_gd_sectors((uint32_t)n);
	if (h->gd_offset != VMDK_GD_AT_END) {
		if (!h->gd_offset || h->gd_offset > file_sectors ||
		    gd_sectors > file_sectors - h->gd_offset)
			return desc_err(err, errlen,
					"grain directory (gdOffset %" PRIu64
					", %" PRIu64 " sectors) lies outside "
					"the file (%" PRIu64 " sectors)",
					h->gd_offset, gd_sectors, file_sectors);
		if ((h->flags & VMDK_FLAG_REDUNDANT_GT) &&
		    (!h->rgd_offset || h->rgd_offset > file_sectors ||
		     gd_sectors > file_sectors - h->rgd_offset))
			return desc_err(err, errlen,
					"redundant grain directory (rgdOffset "
					"%" PRIu64 ") lies outside the file",
					h->rgd_offset);
	} else if (!compressed && !(h->flags & VMDK_FLAG_MARKERS)) {
		return desc_err(err, errlen,
				"gdOffset says 'at the end' but the extent is "
				"not stream-optimized");
	}
	if (h->overhead > VMDK_MAX_CAPACITY)
		return desc_err(err, errlen,
				"overHead %" PRIu64 " sectors is invalid",
				h->overhead);
	*gd_entries = (uint32_t)n;
	return 0;
}

void vmdk_sparse_header_init(struct vmdk_sparse_header *h, uint64_t capacity,
			     uint32_t grain_sectors, bool embedded_desc,
			     bool stream, bool zero_grain)
{
	uint32_t gd_entries =
		vmdk_gd_entries_for(capacity, grain_sectors, VMDK_GTES_PER_GT);
	uint64_t gd_sectors = vmdk_gd_sectors(gd_entries);
	uint64_t gt_sectors = vmdk_gt_sectors(VMDK_GTES_PER_GT);
	uint64_t next;

	memset(h, 0, sizeof(*h));
	h->magic = VMDK_SPARSE_MAGIC;
	h->version = stream ? 3 : zero_grain ? 2 : 1;
	h->flags = VMDK_FLAG_NL_DETECT;
	if (stream)
		h->flags |= VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS;
	else
		h->flags |= VMDK_FLAG_REDUNDANT_GT;
	if (zero_grain && !stream)
		h->flags |= VMDK_FLAG_ZERO_GRAIN;
	h->capacity = capacity;
	h->grain_size = grain_sectors;
	h->num_gtes_per_gt = VMDK_GTES_PER_GT;
	next = 1;
	if (embedded_desc) {
		h->desc_offset = 1;
		h->desc_size = VMDK_EMBEDDED_DESC_SECTORS;
		next += VMDK_EMBEDDED_DESC_SECTORS;
	}
	if (stream) {
		h->gd_offset = VMDK_GD_AT_END;
		h->compress_algorithm = VMDK_COMPRESS_DEFLATE;
		h->overhead = (next + 127) / 128 * 128;
	} else {
		/* VMware's layout: RGD, redundant GTs, GD, GTs, then the
		 * grains from a grain-aligned overhead. */
		h->rgd_offset = next;
		next += gd_sectors + gt_sectors * gd_entries;
		h->gd_offset = next;
		next += gd_sectors + gt_sectors * gd_entries;
		h->overhead = (next + grain_sectors - 1) / grain_sectors *
			      grain_sectors;
	}
	h->single_end_line_char = '\n';
	h->non_end_line_char = ' ';
	h->double_end_line_char1 = '\r';
	h->double_end_line_char2 = '\n';
}

/* ---- geometry, markers, uuid --------------------------------------------*/

void vmdk_geometry(uint64_t sectors, const char *adapter, uint32_t *cyl,
		   uint32_t *heads, uint32_t *secs)
{
	uint64_t c;

	*heads = (adapter && strcmp(adapter, "ide")) ? 255 : 16;
	*secs = 63;
	c = sectors / (*heads * 63);
	if (c > 16383)
		c = 16383;
	if (c == 0)
		c = 1;
	*cyl = (uint32_t)c;
}

void vmdk_meta_marker_init(struct vmdk_meta_marker *m, enum vmdk_marker_type t,
			   uint64_t num_sectors)
{
	memset(m, 0, sizeof(*m));
	m->num_sectors = IMG_LE64(num_sectors);
	m->size = 0;
	m->type = IMG_LE32((uint32_t)t);
}

int vmdk_marker_parse(const void *sector, uint64_t *lba, uint32_t *size)
{
	const struct vmdk_meta_marker *m = sector;

	*lba = IMG_LE64(m->num_sectors);
	*size = IMG_LE32(m->size);
	if (*size)
		return -1;
	return (int)IMG_LE32(m->type);
}

int vmdk_uuid_parse(const char *text, uint8_t uuid[16])
{
	int n = 0, hi = -1;
	const char *p;

	for (p = text; *p; p++) {
		int v;

		if (*p == ' ' || *p == '-')
			continue;
		if (*p >= '0' && *p <= '9')
			v = *p - '0';
		else if (*p >= 'a' && *p <= 'f')
			v = *p - 'a' + 10;
		else if (*p >= 'A' && *p <= 'F')
			v = *p - 'A' + 10;
		else
			return -EINVAL;
		if (hi < 0) {
			hi = v;
			continue;
		}
		if (n >= 16)
			return -EINVAL;
		uuid[n++] = (uint8_t)(hi << 4 | v);
		hi = -1;
	}
	return n == 16 && hi < 0 ? 0 : -EINVAL;
}

void vmdk_uuid_format_ddb(const uint8_t uuid[16], char out[48])
{
	int i;
	char *p = out;

	for (i = 0; i < 16; i++) {
		p += sprintf(p, "%02x", uuid[i]);
		if (i < 15)
			*p++ = i == 7 ? '-' : ' ';
	}
	*p = '\0';
}
