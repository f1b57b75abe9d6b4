// An ordinary Fastify server: no metrics code. `npm start` preloads prefork-otel (-r), which observes
// every request and serves gunicorn_* metrics on 127.0.0.1:9091/metrics (PROMETHEUS_METRICS_PORT).
const fastify = require('fastify')();

fastify.get('/', async () => 'hello\n');
fastify.get('/widgets/:widgetId', async (req) => ({ id: req.params.widgetId }));
fastify.put('/widgets/:widgetId', async (req, reply) => reply.code(409).send({ error: 'conflict' }));

fastify.listen({ host: '127.0.0.1', port: Number(process.env.PORT || 8000) }).then((addr) => console.log(`listening on ${addr}`));
