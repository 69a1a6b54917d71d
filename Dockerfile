# mcrepl image: one image for every role (`schema install`, `tailer`, `worker <dc>`, `run`,
# `flush`, `status`); the command picks the role.
#
#   docker build -t mcrepl .
#   docker run --rm mcrepl --help
#
# Configuration comes from a file (--config or $MCREPL_CONFIG) plus MCREPL_* environment
# overrides; passwords from files (mysql.passwordFile / MCREPL_MYSQL__PASSWORD_FILE), e.g. a
# mounted secret. See docker-compose.yml for a complete example.

# --- build: all dependencies (TypeScript is a dev dependency), then compile --------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` runs tsc, and the sources are not here yet (they are copied after
# the install so that a source change does not redo it). Nothing the build needs has its own
# install script (msgpackr-extract's only checks for its prebuilt binary, which npm installs anyway).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# --- runtime: production dependencies and the compiled code only -------------------------------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would run tsc, which is not installed here.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && npm cache clean --force
# Only dist/src is needed at run time (bin/mcrepl.js loads dist/src/cli/main.js; the schema
# installer reads sql/ from the package root).
COPY --from=build /app/dist/src ./dist/src
COPY bin ./bin
COPY sql ./sql
COPY config ./config
# Non-root: the image's `node` user (uid 1000). The code stays root-owned, so read-only for it.
# Mounted password files must be readable by uid 1000.
USER node
ENTRYPOINT ["node", "bin/mcrepl.js"]
CMD ["--help"]
