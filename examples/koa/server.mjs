// An ordinary Koa app with @koa/router, as an ES module: no metrics code. `npm start` preloads
// prefork-otel with --import; endpoints are the router's templates.
import Koa from 'koa';
import Router from '@koa/router';

const app = new Koa();
const router = new Router();
router.get('/', (ctx) => { ctx.body = 'hello\n'; });
router.get('/posts/:slug', (ctx) => { ctx.body = { slug: ctx.params.slug }; });
router.delete('/posts/:slug', (ctx) => { ctx.status = 503; ctx.body = 'read-only\n'; });
app.use(router.routes());

const port = Number(process.env.PORT || 8000);
app.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
