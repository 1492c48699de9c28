/* SPDX-License-Identifier: MIT */
/* Unit tests for tools/common.c: the JSON writer, -o option lists, sizes. */
#include "tools/common.h"

#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static char *json_of(void (*build)(struct json_writer *w))
{
	struct json_writer w;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert_not_null(f);
	json_init(&w, f);
	build(&w);
	json_finish(&w);
	fclose(f);
	return text;
}

static void build_nested(struct json_writer *w)
{
	json_object_begin(w, NULL);
	json_uint(w, "virtual-size", 1073741824);
	json_string(w, "format", "raw");
	json_object_begin(w, "format-specific");
	json_string(w, "type", "vdi");
	json_object_begin(w, "data");
	json_object_end(w);
	json_object_end(w);
	json_array_begin(w, "list");
	json_int(w, NULL, -5);
	json_bool(w, NULL, true);
	json_null(w, NULL);
	json_array_end(w);
	json_bool(w, "dirty-flag", false);
	json_object_end(w);
}

Test(tool_common, json_layout_like_qemu_img)
{
	char *text = json_of(build_nested);

	cr_assert_str_eq(text, "{\n"
			       "    \"virtual-size\": 1073741824,\n"
			       "    \"format\": \"raw\",\n"
			       "    \"format-specific\": {\n"
			       "        \"type\": \"vdi\",\n"
			       "        \"data\": {}\n"
			       "    },\n"
			       "    \"list\": [\n"
			       "        -5,\n"
			       "        true,\n"
			       "        null\n"
			       "    ],\n"
			       "    \"dirty-flag\": false\n"
			       "}\n");
	free(text);
}

static void build_strings(struct json_writer *w)
{
	json_object_begin(w, NULL);
	json_string(w, "q", "a\"b\\c\nd\te\x01");
	json_string(w, "utf8", "gr\xc3\xbc\xc3\x9f \xe2\x82\xac");
	json_string(w, "latin1", "caf\xe9");
	json_string(w, "overlong", "\xc0\xaf");
	json_object_end(w);
}

Test(tool_common, json_escaping)
{
	char *text = json_of(build_strings);

	cr_assert(strstr(text, "\"q\": \"a\\\"b\\\\c\\nd\\te\\u0001\""), "%s",
		  text);
	cr_assert(strstr(text, "\"utf8\": \"gr\xc3\xbc\xc3\x9f \xe2\x82\xac\""),
		  "%s", text);
	cr_assert(strstr(text, "\"latin1\": \"caf\\u00e9\""), "%s", text);
	cr_assert(strstr(text, "\"overlong\": \"\\u00c0\\u00af\""), "%s", text);
	free(text);
}

Test(tool_common, option_lists)
{
	char *opts = NULL;

	cr_assert_eq(tool_append_option(&opts, "subformat=fixed"), 0);
	cr_assert_str_eq(opts, "subformat=fixed");
	cr_assert_eq(tool_append_option(&opts, "block_size=1M"), 0);
	cr_assert_str_eq(opts, "subformat=fixed,block_size=1M");
	free(opts);
	cr_assert(tool_options_ask_help("help"));
	cr_assert(tool_options_ask_help("?"));
	cr_assert_not(tool_options_ask_help("helpful=1"));
	cr_assert_not(tool_options_ask_help(NULL));
}

Test(tool_common, sizes, .init = cr_redirect_stderr)
{
	uint64_t v;

	cr_assert_eq(tool_parse_size("1.5G", &v), 0);
	cr_assert_eq(v, 3ull << 29);
	cr_assert_eq(tool_parse_size("12Q", &v), -EINVAL);
	cr_assert_eq(tool_parse_size("16E", &v), -ERANGE);
	fflush(stderr);
	cr_assert_stderr_eq_str(
		"imgtool: invalid size '12Q' (a number of bytes, optionally with a K, M, G, T, P or E suffix, or s for 512-byte sectors)\n"
		"imgtool: size '16E' is too large\n");
}

Test(tool_common, help_flags)
{
	cr_assert(tool_is_help("--help"));
	cr_assert(tool_is_help("-h"));
	cr_assert_not(tool_is_help("--helpme"));
}
