/* A tiny JSON reader for the fake NVML's node descriptions and control lines (a test fake, not a library). */
#ifndef FAKE_NVML_JSON_H
#define FAKE_NVML_JSON_H

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json {
    json_type type;
    double number;       /* JSON_NUMBER, JSON_BOOL (0/1) */
    char *string;        /* JSON_STRING; the key of an object member */
    char *key;           /* set on members of an object */
    struct json *items;  /* JSON_ARRAY / JSON_OBJECT children */
    int count;
} json;

/* Parses text; returns NULL on a syntax error. Free with json_free. */
json *json_parse(const char *text);
void json_free(json *value);

/* Lookups that tolerate NULL and wrong types, so callers can chain them. */
const json *json_get(const json *object, const char *key);
const json *json_at(const json *array, int index);
int json_len(const json *array);
double json_num(const json *value, double fallback);
const char *json_str(const json *value, const char *fallback);

#endif
