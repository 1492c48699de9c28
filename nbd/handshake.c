/* SPDX-License-Identifier: MIT */
/*
 * NBD fixed newstyle negotiation: the greeting, then options until the
 * client picks an export (NBD_OPT_GO / NBD_OPT_EXPORT_NAME) or leaves.
 */
#include "nbd_internal.h"
#include "nbd_proto.h"

#include "driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Option payloads we read at all; bigger ones get NBD_REP_ERR_TOO_BIG
 * after being skipped, and absurd ones drop the client. */
#define NBD_OPTION_MAX 65536u
#define NBD_OPTION_SKIP_MAX (1u << 20)
#define NBD_NAME_MAX 4096u

static int nbd_opt_reply(struct nbd_conn *c, uint32_t option, uint32_t type,
			 const void *data, uint32_t len)
{
	struct nbd_option_reply rep = {
		.magic = IMG_BE64(NBD_OPT_REPLY_MAGIC),
		.option = IMG_BE32(option),
		.type = IMG_BE32(type),
		.length = IMG_BE32(len),
	};
	struct iovec iov[2] = { { &rep, sizeof(rep) }, { (void *)data, len } };

	return nbd_conn_writev(c, iov, len ? 2 : 1);
}

static int nbd_opt_error(struct nbd_conn *c, uint32_t option, uint32_t type,
			 const char *message)
{
	return nbd_opt_reply(c, option, type, message,
			     (uint32_t)strlen(message));
}

static struct nbd_export *nbd_export_find(struct nbd_server *srv,
					  const char *name, size_t len)
{
	if (len == 0)
		return srv->exports;
	for (struct nbd_export *e = srv->exports; e; e = e->next)
		if (strlen(e->name) == len && !memcmp(e->name, name, len))
			return e;
	return NULL;
}

static uint16_t nbd_transmission_flags(const struct nbd_conn *c,
				       const struct nbd_export *e)
{
	/* Every connection to an export shares one libimg handle in this
	 * process, so a FLUSH on any connection makes the writes of all
	 * connections durable: that is what CAN_MULTI_CONN promises. */
	uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
			 NBD_FLAG_CAN_MULTI_CONN;

	if (e->read_only)
		flags |= NBD_FLAG_READ_ONLY;
	else
		flags |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
			 NBD_FLAG_SEND_WRITE_ZEROES;
	if (c->structured)
		flags |= NBD_FLAG_SEND_DF;
	return flags;
}

static int nbd_opt_list(struct nbd_conn *c, uint32_t len)
{
	int r;

	if (len)
		return nbd_opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
				     "NBD_OPT_LIST takes no data");
	for (struct nbd_export *e = c->srv->exports; e; e = e->next) {
		size_t nl = strlen(e->name);
		char buf[4 + NBD_NAME_MAX];
		uint32_t be = IMG_BE32((uint32_t)nl);
		memcpy(buf, &be, 4);
		memcpy(buf + 4, e->name, nl);
		r = nbd_opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, buf,
				  (uint32_t)(4 + nl));
		if (r < 0)
			return r;
	}
	return nbd_opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static int nbd_send_info(struct nbd_conn *c, uint32_t option,
			 struct nbd_export *e, const uint8_t *requests,
			 unsigned nrequests)
{
	bool want_name = false, want_description = false;
	uint8_t buf[2 + NBD_NAME_MAX];
	uint16_t be16;
	uint64_t be64;
	uint32_t be32;
	int r;

	for (unsigned i = 0; i < nrequests; i++) {
		uint16_t type;
		memcpy(&type, requests + 2 * i, 2);
		type = IMG_BE16(type);
		want_name |= type == NBD_INFO_NAME;
		want_description |= type == NBD_INFO_DESCRIPTION;
	}

	/* NBD_INFO_EXPORT: type, size, transmission flags */
	be16 = IMG_BE16(NBD_INFO_EXPORT);
	memcpy(buf, &be16, 2);
	be64 = IMG_BE64(e->size);
	memcpy(buf + 2, &be64, 8);
	be16 = IMG_BE16(nbd_transmission_flags(c, e));
	memcpy(buf + 10, &be16, 2);
	r = nbd_opt_reply(c, option, NBD_REP_INFO, buf, 12);
	if (r < 0)
		return r;

	/* Any byte range works (libimg does the read-modify-write), so the
	 * minimum is 1; we always send the constraints. */
	be16 = IMG_BE16(NBD_INFO_BLOCK_SIZE);
	memcpy(buf, &be16, 2);
	be32 = IMG_BE32(1);
	memcpy(buf + 2, &be32, 4);
	be32 = IMG_BE32(e->preferred_block);
	memcpy(buf + 6, &be32, 4);
	be32 = IMG_BE32(NBD_SERVER_MAX_PAYLOAD);
	memcpy(buf + 10, &be32, 4);
	r = nbd_opt_reply(c, option, NBD_REP_INFO, buf, 14);
	if (r < 0)
		return r;

	if (want_name) {
		size_t nl = strlen(e->name);
		be16 = IMG_BE16(NBD_INFO_NAME);
		memcpy(buf, &be16, 2);
		memcpy(buf + 2, e->name, nl);
		r = nbd_opt_reply(c, option, NBD_REP_INFO, buf,
				  (uint32_t)(2 + nl));
		if (r < 0)
			return r;
	}
	if (want_description && e->description) {
		size_t dl = strlen(e->description);
		if (dl > NBD_NAME_MAX)
			dl = NBD_NAME_MAX;
		be16 = IMG_BE16(NBD_INFO_DESCRIPTION);
		memcpy(buf, &be16, 2);
		memcpy(buf + 2, e->description, dl);
		r = nbd_opt_reply(c, option, NBD_REP_INFO, buf,
				  (uint32_t)(2 + dl));
		if (r < 0)
			return r;
	}
	return nbd_opt_reply(c, option, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_INFO and NBD_OPT_GO: name length, name, count, info types.
 * Returns 1 when GO succeeded. */
static int nbd_opt_info_go(struct nbd_conn *c, uint32_t option,
			   const uint8_t *data, uint32_t len)
{
	struct nbd_export *e;
	uint32_t name_len;
	uint16_t nrequests;
	int r;

	if (len < 6)
		goto invalid;
	memcpy(&name_len, data, 4);
	name_len = IMG_BE32(name_len);
	if (name_len > NBD_NAME_MAX || name_len > len - 6)
		goto invalid;
	memcpy(&nrequests, data + 4 + name_len, 2);
	nrequests = IMG_BE16(nrequests);
	if (len != 6 + name_len + 2u * nrequests)
		goto invalid;
	e = nbd_export_find(c->srv, (const char *)data + 4, name_len);
	if (!e)
		return nbd_opt_error(c, option, NBD_REP_ERR_UNKNOWN,
				     "no such export");
	r = nbd_send_info(c, option, e, data + 6 + name_len, nrequests);
	if (r < 0 || option != NBD_OPT_GO)
		return r;
	/* Meta contexts were chosen for one export; another export means
	 * none. */
	if (c->export != e)
		c->base_allocation = false;
	c->export = e;
	return 1;
invalid:
	return nbd_opt_error(c, option, NBD_REP_ERR_INVALID,
			     "malformed export request");
}

static int nbd_opt_meta_context(struct nbd_conn *c, uint32_t option,
				const uint8_t *data, uint32_t len)
{
	static const char base_allocation[] = "base:allocation";
	uint32_t name_len, nqueries, pos;
	bool set = option == NBD_OPT_SET_META_CONTEXT;
	bool selected = false;
	struct nbd_export *e;
	int r;

	if (set && !c->structured)
		return nbd_opt_error(c, option, NBD_REP_ERR_INVALID,
				     "structured replies not negotiated");
	if (len < 8)
		goto invalid;
	memcpy(&name_len, data, 4);
	name_len = IMG_BE32(name_len);
	if (name_len > NBD_NAME_MAX || name_len > len - 8)
		goto invalid;
	memcpy(&nqueries, data + 4 + name_len, 4);
	nqueries = IMG_BE32(nqueries);
	pos = 8 + name_len;
	/* Validate every query before answering any. */
	for (uint32_t i = 0, p = pos; i < nqueries; i++) {
		uint32_t ql;
		if (len - p < 4)
			goto invalid;
		memcpy(&ql, data + p, 4);
		ql = IMG_BE32(ql);
		if (ql > NBD_NAME_MAX || ql > len - p - 4)
			goto invalid;
		p += 4 + ql;
		if (i + 1 == nqueries && p != len)
			goto invalid;
	}
	if (nqueries == 0 && pos != len)
		goto invalid;
	e = nbd_export_find(c->srv, (const char *)data + 4, name_len);
	if (!e)
		return nbd_opt_error(c, option, NBD_REP_ERR_UNKNOWN,
				     "no such export");

	if (set)
		c->base_allocation = false;
	if (!set && nqueries == 0)
		selected = true;
	for (uint32_t i = 0; i < nqueries; i++) {
		uint32_t ql;
		memcpy(&ql, data + pos, 4);
		ql = IMG_BE32(ql);
		const char *q = (const char *)data + pos + 4;
		pos += 4 + ql;
		if (ql == sizeof(base_allocation) - 1 &&
		    !memcmp(q, base_allocation, ql))
			selected = true;
		/* LIST may ask for a whole namespace */
		else if (!set && ql == 5 && !memcmp(q, "base:", 5))
			selected = true;
	}
	if (selected) {
		uint8_t buf[4 + sizeof(base_allocation)];
		uint32_t id = IMG_BE32(NBD_META_BASE_ALLOCATION_ID);
		memcpy(buf, &id, 4);
		memcpy(buf + 4, base_allocation, sizeof(base_allocation) - 1);
		r = nbd_opt_reply(c, option, NBD_REP_META_CONTEXT, buf,
				  sizeof(buf) - 1);
		if (r < 0)
			return r;
		if (set) {
			c->base_allocation = true;
			c->export = e;
		}
	}
	return nbd_opt_reply(c, option, NBD_REP_ACK, NULL, 0);
invalid:
	return nbd_opt_error(c, option, NBD_REP_ERR_INVALID,
			     "malformed meta context request");
}

/* The old way to pick an export: no reply on error, just a close. */
static int nbd_opt_export_name(struct nbd_conn *c, const uint8_t *data,
			       uint32_t len)
{
	struct {
		uint64_t size;
		uint16_t flags;
		uint8_t zeroes[124];
	} __attribute__((packed)) rep = { 0 };
	struct nbd_export *e;
	int r;

	if (len > NBD_NAME_MAX)
		return -EINVAL;
	e = nbd_export_find(c->srv, (const char *)data, len);
	if (!e) {
		nbd_log(c->srv, "client %s asked for an unknown export",
			c->peer);
		return -ENOENT;
	}
	if (c->export != e)
		c->base_allocation = false;
	c->export = e;
	rep.size = IMG_BE64(e->size);
	rep.flags = IMG_BE16(nbd_transmission_flags(c, e));
	r = nbd_conn_write(c, &rep, c->no_zeroes ? 10 : sizeof(rep));
	return r < 0 ? r : 1;
}

static int nbd_option(struct nbd_conn *c, uint32_t option, uint8_t *data,
		      uint32_t len)
{
	struct nbd_server *srv = c->srv;
	bool tls_missing = srv->tls_ctx && !c->ssl;
	int r;

	switch (option) {
	case NBD_OPT_ABORT:
		nbd_opt_reply(c, option, NBD_REP_ACK, NULL, 0);
		return 0;
	case NBD_OPT_EXPORT_NAME:
		if (tls_missing)
			return -EACCES;
		return nbd_opt_export_name(c, data, len);
	case NBD_OPT_STARTTLS:
		if (!srv->tls_ctx)
			return nbd_opt_error(c, option, NBD_REP_ERR_POLICY,
					     "TLS is not configured");
		if (c->ssl || len)
			return nbd_opt_error(c, option, NBD_REP_ERR_INVALID,
					     "unexpected STARTTLS");
		r = nbd_opt_reply(c, option, NBD_REP_ACK, NULL, 0);
		if (r < 0)
			return r;
		r = nbd_tls_accept(c);
		if (r < 0)
			nbd_log(srv, "client %s: TLS handshake failed",
				c->peer);
		return r;
	}
	if (tls_missing)
		return nbd_opt_error(c, option, NBD_REP_ERR_TLS_REQD,
				     "this server requires TLS");
	switch (option) {
	case NBD_OPT_LIST:
		return nbd_opt_list(c, len);
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return nbd_opt_info_go(c, option, data, len);
	case NBD_OPT_STRUCTURED_REPLY:
		if (len || c->structured)
			return nbd_opt_error(c, option, NBD_REP_ERR_INVALID,
					     "unexpected STRUCTURED_REPLY");
		c->structured = true;
		return nbd_opt_reply(c, option, NBD_REP_ACK, NULL, 0);
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return nbd_opt_meta_context(c, option, data, len);
	default:
		return nbd_opt_error(c, option, NBD_REP_ERR_UNSUP,
				     "option not supported");
	}
}

int nbd_handshake(struct nbd_conn *c)
{
	struct {
		uint64_t magic;
		uint64_t ihaveopt;
		uint16_t flags;
	} __attribute__((packed)) greeting = {
		.magic = IMG_BE64(NBD_MAGIC),
		.ihaveopt = IMG_BE64(NBD_IHAVEOPT),
		.flags = IMG_BE16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
	};
	uint8_t *data = NULL;
	uint32_t client_flags;
	int r;

	r = nbd_conn_write(c, &greeting, sizeof(greeting));
	if (r < 0)
		return r;
	r = nbd_conn_read(c, &client_flags, 4);
	if (r < 0)
		return r;
	client_flags = IMG_BE32(client_flags);
	if (client_flags &
	    ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
		nbd_log(c->srv, "client %s: unknown client flags %#x", c->peer,
			client_flags);
		return -EPROTO;
	}
	c->no_zeroes = client_flags & NBD_FLAG_C_NO_ZEROES;

	data = malloc(NBD_OPTION_MAX + 1);
	if (!data)
		return -ENOMEM;
	for (;;) {
		struct nbd_option_header h;
		uint32_t option, len;

		r = nbd_conn_read(c, &h, sizeof(h));
		if (r < 0)
			break;
		if (IMG_BE64(h.magic) != NBD_IHAVEOPT) {
			nbd_log(c->srv, "client %s: bad option magic", c->peer);
			r = -EPROTO;
			break;
		}
		option = IMG_BE32(h.option);
		len = IMG_BE32(h.length);
		if (len > NBD_OPTION_MAX) {
			if (len > NBD_OPTION_SKIP_MAX) {
				nbd_log(c->srv, "client %s: option of %u bytes",
					c->peer, len);
				r = -EPROTO;
				break;
			}
			r = nbd_conn_discard(c, len);
			if (r == 0)
				r = nbd_opt_error(c, option,
						  NBD_REP_ERR_TOO_BIG,
						  "option data too long");
			if (r < 0)
				break;
			continue;
		}
		r = nbd_conn_read(c, data, len);
		if (r < 0)
			break;
		data[len] = 0;
		/* 1: on to transmission; <0: drop the client */
		r = nbd_option(c, option, data, len);
		if (r != 0 || option == NBD_OPT_ABORT)
			break;
	}
	free(data);
	if (r == -ECONNRESET)
		return 0;
	return r;
}
