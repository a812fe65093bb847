/* A tiny recursive-descent JSON reader: enough for node descriptions and control lines. */
#include "json.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p;
    int depth;
} cursor;

static json *parse_value(cursor *c);

static void skip_space(cursor *c) {
    while (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r') c->p++;
}

static char *parse_string_raw(cursor *c) {
    if (*c->p != '"') return NULL;
    c->p++;
    size_t cap = 16, len = 0;
    char *out = malloc(cap);
    while (*c->p && *c->p != '"') {
        char ch = *c->p++;
        if (ch == '\\') {
            char esc = *c->p++;
            switch (esc) {
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 'r': ch = '\r'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'u': /* not needed by the fake: keep a placeholder */
                for (int i = 0; i < 4 && *c->p; i++) c->p++;
                ch = '?';
                break;
            case '\0': free(out); return NULL;
            default: ch = esc; break; /* \" \\ \/ */
            }
        }
        if (len + 2 > cap) out = realloc(out, cap *= 2);
        out[len++] = ch;
    }
    if (*c->p != '"') { free(out); return NULL; }
    c->p++;
    out[len] = '\0';
    return out;
}

static int append(json *parent, json *child) {
    parent->items = realloc(parent->items, sizeof(json) * (size_t)(parent->count + 1));
    parent->items[parent->count++] = *child;
    free(child);
    return 1;
}

static json *parse_container(cursor *c, json_type type, char close) {
    json *v = calloc(1, sizeof(json));
    v->type = type;
    c->p++;
    skip_space(c);
    if (*c->p == close) { c->p++; return v; }
    for (;;) {
        char *key = NULL;
        skip_space(c);
        if (type == JSON_OBJECT) {
            key = parse_string_raw(c);
            skip_space(c);
            if (!key || *c->p != ':') { free(key); json_free(v); return NULL; }
            c->p++;
        }
        json *child = parse_value(c);
        if (!child) { free(key); json_free(v); return NULL; }
        child->key = key;
        append(v, child);
        skip_space(c);
        if (*c->p == ',') { c->p++; continue; }
        if (*c->p == close) { c->p++; return v; }
        json_free(v);
        return NULL;
    }
}

static json *parse_value(cursor *c) {
    if (++c->depth > 64) return NULL;
    skip_space(c);
    json *v = NULL;
    if (*c->p == '{') v = parse_container(c, JSON_OBJECT, '}');
    else if (*c->p == '[') v = parse_container(c, JSON_ARRAY, ']');
    else if (*c->p == '"') {
        char *s = parse_string_raw(c);
        if (s) { v = calloc(1, sizeof(json)); v->type = JSON_STRING; v->string = s; }
    } else if (!strncmp(c->p, "true", 4) || !strncmp(c->p, "false", 5)) {
        v = calloc(1, sizeof(json));
        v->type = JSON_BOOL;
        v->number = c->p[0] == 't';
        c->p += c->p[0] == 't' ? 4 : 5;
    } else if (!strncmp(c->p, "null", 4)) {
        v = calloc(1, sizeof(json));
        c->p += 4;
    } else {
        char *end = NULL;
        double d = strtod(c->p, &end);
        if (end != c->p) { v = calloc(1, sizeof(json)); v->type = JSON_NUMBER; v->number = d; c->p = end; }
    }
    c->depth--;
    return v;
}

json *json_parse(const char *text) {
    cursor c = {text, 0};
    json *v = parse_value(&c);
    if (!v) return NULL;
    skip_space(&c);
    if (*c.p) { json_free(v); return NULL; }
    return v;
}

static void free_members(json *v) {
    for (int i = 0; i < v->count; i++) free_members(&v->items[i]);
    free(v->items);
    free(v->string);
    free(v->key);
}

void json_free(json *value) {
    if (!value) return;
    free_members(value);
    free(value);
}

const json *json_get(const json *object, const char *key) {
    if (!object || object->type != JSON_OBJECT) return NULL;
    for (int i = 0; i < object->count; i++)
        if (!strcmp(object->items[i].key, key)) return &object->items[i];
    return NULL;
}

const json *json_at(const json *array, int index) {
    if (!array || array->type != JSON_ARRAY || index < 0 || index >= array->count) return NULL;
    return &array->items[index];
}

int json_len(const json *array) { return array && array->type == JSON_ARRAY ? array->count : 0; }

double json_num(const json *value, double fallback) {
    return value && (value->type == JSON_NUMBER || value->type == JSON_BOOL) ? value->number : fallback;
}

const char *json_str(const json *value, const char *fallback) {
    return value && value->type == JSON_STRING ? value->string : fallback;
}
