// llama.cpp's logits for a token-id prompt, through libllama's C API, printed as the JSON that
// `ferrite eval logits --json` prints: {"n_vocab": V, "logits": [[V floats] per input position],
// "greedy": [N ids]}. The prompt is one llama_decode batch with an output at every position;
// then N greedy tokens are decoded one at a time (the first from the prompt's last logits).
// Built and run by scripts/reference-logits.sh against the pinned anchor.
//
//   reference-logits MODEL.gguf 1,5,9,... N_GENERATE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int argmax(const float *l, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

static void print_row(const float *l, int n) {
    putchar('[');
    for (int i = 0; i < n; i++) printf(i ? ",%.9g" : "%.9g", l[i]);
    putchar(']');
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.gguf ID,ID,... N_GENERATE\n", argv[0]);
        return 2;
    }
    int n_gen = atoi(argv[3]);
    int cap = 16, n = 0;
    llama_token *tokens = malloc(sizeof(llama_token) * cap);
    for (char *tok = strtok(argv[2], ","); tok; tok = strtok(NULL, ",")) {
        if (n == cap) tokens = realloc(tokens, sizeof(llama_token) * (cap *= 2));
        tokens[n++] = atoi(tok);
    }
    if (n == 0) {
        fprintf(stderr, "no token ids\n");
        return 2;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    if (getenv("REFERENCE_NO_REPACK")) mp.use_extra_bufts = false;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n + n_gen < 256 ? 256 : n + n_gen;
    cp.n_batch = cp.n_ubatch = n; // the prompt is one micro-batch, as ferrite runs it
    const char *threads = getenv("REFERENCE_THREADS");
    cp.n_threads = cp.n_threads_batch = threads ? atoi(threads) : 1;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "cannot create a context\n");
        return 1;
    }
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = tokens[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch)) {
        fprintf(stderr, "llama_decode failed on the prompt\n");
        return 1;
    }
    printf("{\"n_vocab\":%d,\"logits\":[", n_vocab);
    for (int i = 0; i < n; i++) {
        if (i) putchar(',');
        print_row(llama_get_logits_ith(ctx, i), n_vocab);
    }
    printf("],\"greedy\":[");
    int next = argmax(llama_get_logits_ith(ctx, n - 1), n_vocab);
    for (int g = 0; g < n_gen; g++) {
        printf(g ? ",%d" : "%d", next);
        if (g + 1 == n_gen) break;
        batch.n_tokens = 1;
        batch.token[0] = next;
        batch.pos[0] = n + g;
        batch.logits[0] = 1;
        if (llama_decode(ctx, batch)) {
            fprintf(stderr, "llama_decode failed at position %d\n", n + g);
            return 1;
        }
        next = argmax(llama_get_logits_ith(ctx, 0), n_vocab);
    }
    printf("]}\n");
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    free(tokens);
    return 0;
}
