# The operator image: `fogctl run` (and the rest of fogctl). Built and checked elsewhere; kept
# plain and standard on purpose.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY controller ./controller
COPY migrations ./migrations
RUN pip install --no-cache-dir .

# The package is installed into site-packages; the migrations stay here.
ENV FOG_MIGRATIONS_DIR=/app/migrations
# deploy/operator.yaml runs as this non-root user (runAsNonRoot needs a numeric id).
USER 65532
ENTRYPOINT ["fogctl"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
